"""Generate runs as server-side jobs, at most one per profile.

The run lives in a thread of the server, not in the browser's request: a reloaded (or
closed) page does not stop it, its result is stored when it finishes, and any page showing
the profile re-attaches to it and follows its progress.
"""
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prefstudio.errors import InvalidInput, PrefStudioError, served
from prefstudio.guidance.noise_optimization import GuidanceProgress
from prefstudio.studio import SideBySide

log = logging.getLogger(__name__)


@dataclass
class GenerationJob:
    profile: str
    prompt: str
    seed: int
    iterations: int
    # The settings it runs with, as the page's controls hold them (a reloaded page shows them).
    controls: dict = field(default_factory=dict)
    prompt_notes: list[str] = field(default_factory=list)  # what of the prompt the generator does not read
    stop: threading.Event = field(default_factory=threading.Event)
    progress: list[GuidanceProgress] = field(default_factory=list)
    result: SideBySide | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    version: int = 0

    def wait_for_change(self, seen: int, timeout: float = 0.5) -> int:
        """Blocks until the job moved past version `seen` (or timeout); the version now."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != seen, timeout=timeout)
            return self.version

    def _update(self, apply: Callable[[], None]) -> None:
        with self.changed:
            apply()
            self.version += 1
            self.changed.notify_all()


class GenerationJobs:
    def __init__(self, steps: Callable[[Iterator], Iterator]):
        self._steps = steps  # runs each step of a computation under the app's compute lock
        self._jobs: dict[str, GenerationJob] = {}
        self._lock = threading.Lock()

    def running(self, profile_key: str) -> GenerationJob | None:
        with self._lock:
            job = self._jobs.get(profile_key)
        return job if job is not None and not job.done.is_set() else None

    def start(self, profile_key: str, job: GenerationJob, run: Iterator) -> GenerationJob:
        with self._lock:
            current = self._jobs.get(profile_key)
            if current is not None and not current.done.is_set():
                raise InvalidInput(f"a run for {job.profile!r} is already going (“{current.prompt[:60]}”): "
                                   "wait for it or press Stop")
            self._jobs[profile_key] = job
        threading.Thread(target=self._run, args=(job, run), daemon=True, name=f"generate-{job.seed}").start()
        return job

    def _run(self, job: GenerationJob, run: Iterator) -> None:
        try:
            for item in self._steps(run):
                if isinstance(item, GuidanceProgress):
                    job._update(lambda: job.progress.append(item))
                elif isinstance(item, SideBySide):
                    job._update(lambda: setattr(job, "result", item))
        except PrefStudioError as error:
            message = served(error)  # `error` is unbound once the except block ends
            job._update(lambda: setattr(job, "error", message))
        except Exception:  # a bug: logged whole, told to the page in one line
            log.exception("generation run failed")
            job._update(lambda: setattr(job, "error", "the run failed with an internal error (see the server log)"))
        finally:
            job.done.set()
            job._update(lambda: None)
