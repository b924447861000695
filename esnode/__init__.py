"""esnode: a clustered, durable event store."""
