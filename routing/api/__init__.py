"""The REST API under /api/, on the admin listener only: the routing table, its history."""
