"""The event store: append/read/subscribe on JetStream, projections and their stores, embedded NATS."""
