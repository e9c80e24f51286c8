// Snapshots: see docs/ARCHITECTURE.md.
