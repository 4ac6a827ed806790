"""Trainyard's AI worker: a supervisor process that claims jobs of one runtime, runs each
training job in a child process group, serves inference from a long-lived child, and
keeps the queue's leases, cancellation and timeouts in order."""
