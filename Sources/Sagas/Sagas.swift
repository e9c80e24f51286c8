// Sagas: see docs/ARCHITECTURE.md.
