"""Protocol-faithful stand-ins for gzond/gqrl, qrysm beacon-chain and validator used by the local lab.

Everything in this package except ``build.py`` and ``keystore_fixture.py`` must run on a bare Debian
``python3`` (stdlib only): ``build.py`` packs those modules into one self-contained executable per client.
"""
