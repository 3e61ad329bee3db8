"""Work sent to the workers: message formats (`work`), replica routing (`routing`), when a compute
task may be dispatched (`compute_tasks`) and the transactional outbox that sends each decision once
(`outbox`). Shared by the events service and the scheduler."""
