"""Static facts the stack config is checked against: Hetzner offerings and what the clients need.

Kept as tables in code (not fetched) so that `qpool validate` works offline and a reviewer can see in one
place why a server type or volume size is rejected. Update these tables when Hetzner's catalogue changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerType:
    name: str
    vcpus: int
    memory_gib: int
    arch: str  # "amd64" | "arm64": the pinned client binaries must match


def _types(arch: str, *rows: tuple[str, int, int]) -> dict[str, ServerType]:
    return {name: ServerType(name, cpu, mem, arch) for name, cpu, mem in rows}


#: Hetzner Cloud server types currently offered (shared and dedicated vCPU, x86 and Arm), one table.
#: Source: Hetzner's server-type catalogue (docs.hetzner.com/cloud/servers/overview, the API's
#: `GET /server_types`) and the hcloud provider docs, which use cx23 as their example type (pulumi-hcloud
#: v1.32, February 2026). Checked 2026-12-02. The cpx second generation (cpx12..cpx62) and cx gen3
#: (cx23..cx53) replaced the types in RETIRED_SERVER_TYPES below.
SERVER_TYPES: dict[str, ServerType] = {
    **_types("amd64", ("cx23", 2, 4), ("cx33", 4, 8), ("cx43", 8, 16), ("cx53", 16, 32)),
    **_types("amd64", ("cpx12", 1, 2), ("cpx22", 2, 4), ("cpx32", 4, 8), ("cpx42", 8, 16), ("cpx52", 12, 24),
             ("cpx62", 16, 32)),
    **_types("amd64", ("ccx13", 2, 8), ("ccx23", 4, 16), ("ccx33", 8, 32), ("ccx43", 16, 64),
             ("ccx53", 32, 128), ("ccx63", 48, 192)),
    **_types("arm64", ("cax11", 2, 4), ("cax21", 4, 8), ("cax31", 8, 16), ("cax41", 16, 32)),
}

#: Retired type -> its same-size successor. Hetzner deprecated these in October 2025 and removed them in
#: January 2026: creating a server of such a type fails during `pulumi up`, so the config refuses them.
RETIRED_SERVER_TYPES: dict[str, str] = {
    "cx22": "cx23", "cx32": "cx33", "cx42": "cx43", "cx52": "cx53",
    "cpx11": "cpx22", "cpx21": "cpx32", "cpx31": "cpx32", "cpx41": "cpx42", "cpx51": "cpx62",
}
RETIRED_WHEN = "January 2026"

#: Hetzner Cloud locations and the network zone each belongs to (a subnet serves one zone).
LOCATIONS: dict[str, str] = {
    "fsn1": "eu-central",
    "nbg1": "eu-central",
    "hel1": "eu-central",
    "ash": "us-east",
    "hil": "us-west",
    "sin": "ap-southeast",
}


@dataclass(frozen=True)
class RoleNeeds:
    """Minimum resources for a host role.

    Validator hosts run an execution client, a beacon node and the validator client together; the
    execution client's state cache and the beacon node's state regeneration dominate memory. 16 GiB is the
    floor that keeps both clients out of swap during sync; 4 vCPUs keep block processing inside a slot.
    """

    min_memory_gib: int
    min_vcpus: int


ROLE_NEEDS: dict[str, RoleNeeds] = {
    "primary": RoleNeeds(min_memory_gib=16, min_vcpus=4),
    "backup": RoleNeeds(min_memory_gib=16, min_vcpus=4),
    "monitoring": RoleNeeds(min_memory_gib=4, min_vcpus=2),
}


@dataclass(frozen=True)
class StorageEstimate:
    """Chain data on the validator volume: current size plus one year of growth, with headroom.

    Zond's chains are young, so these are estimates to be revised from the `node_filesystem_*` metrics the
    monitoring server collects (the disk-filling alert predicts from the real growth rate).
    """

    execution_base_gib: int = 20
    execution_growth_gib_per_year: int = 100
    beacon_base_gib: int = 10
    beacon_growth_gib_per_year: int = 50
    headroom: float = 1.3

    @property
    def minimum_volume_gib(self) -> int:
        one_year = (self.execution_base_gib + self.execution_growth_gib_per_year
                    + self.beacon_base_gib + self.beacon_growth_gib_per_year)
        return int(one_year * self.headroom + 0.999)


STORAGE = StorageEstimate()

#: Smallest Hetzner volume accepted for the monitoring server's TSDB.
MIN_MONITORING_VOLUME_GIB = 20

#: Debian release used by production hosts and by the local lab (one release for both).
DEBIAN_IMAGE = "debian-12"
DEBIAN_SUITE = "bookworm"
