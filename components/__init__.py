"""Pulumi components of the QuantaPool topology: one ComponentResource per module."""
