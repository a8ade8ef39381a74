"""Artifact bundles: the manifest (hashes, roles, versions), the build that writes them, and edgeseg.load."""
