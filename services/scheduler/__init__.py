"""The scheduler: the job lifecycle (queue, placement, retries, timeouts, stop); the only writer of job events."""
