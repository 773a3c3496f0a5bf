"""The multi-process plumbing, in one place: start-up and bounded waits (`multihost`), the
peer watchdog that ends a run when a process dies (`peer_watchdog`), JAX's coordination
service kept alive in a child process on jax < 0.10 (`coordination_service`), and one writer
per workdir (`workdir_lock`). It knows nothing of data or models, so every layer may use it."""
