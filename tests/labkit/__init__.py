"""Test infrastructure: the netns lab and the VM lab."""
