"""The top of the layers: the `qpool` command, assembled from the command groups of qpool and lab."""
