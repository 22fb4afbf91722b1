"""A Python client for conveyor's queue: a Producer that enqueues and a Worker that runs jobs."""
from ._db import ConnectionPool, Retry, is_retryable
from .producer import Producer
from .worker import Job, JobContext, PermanentError, Worker

__all__ = ["ConnectionPool", "Job", "JobContext", "PermanentError", "Producer", "Retry", "Worker", "is_retryable"]
