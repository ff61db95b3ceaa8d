"""Local lab hosts that stand in for bare-metal nodes: systemd-nspawn, a netns each, a local apt mirror."""
