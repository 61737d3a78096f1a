"""Dynamic batching: a pure planner deciding what to run, and an event-driven
batcher that queues requests and runs the plans on model instances."""
