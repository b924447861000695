"""esnode's HTTP API (Event Store compatible): docs/http.md."""
