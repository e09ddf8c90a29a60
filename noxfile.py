"""Developer sessions: ``nox -s tests`` is what CI runs."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "docs", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"


def pytest_workers() -> int:
    """Two pytest workers per CPU this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(8, 2 * cpus)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The unit, simulation and loopback suites on the trio and asyncio backends."""
    session.install("-e", ".[test]")
    # Two workers per CPU: about a third of a worker's time is spent waiting
    # (real-socket tests, child interpreters starting, timers), and a second
    # worker on the same CPU computes meanwhile. On two CPUs, four workers
    # take about 80 s where two took about 115 s, for the same CPU time.
    # Work stealing: a worker that runs out takes tests from another's
    # queue, so a few long tests at the end of one queue do not leave the
    # others idle.
    # Bytecode caching on even where the environment turns it off: without
    # it each worker compiles and assertion-rewrites every test module again
    # (about 9 CPU-seconds of collection per worker instead of 3), and every
    # child interpreter compiles the package again. (An empty value counts
    # as unset for Python; the caches are __pycache__ directories, ignored
    # by git.)
    session.run(
        "pytest",
        "-q",
        "-m",
        "not slow",
        "-n",
        str(pytest_workers()),
        "--dist",
        "worksteal",
        *session.posargs,
        env={"PYTHONDONTWRITEBYTECODE": ""},
    )


@nox.session(python=PYTHON)
def properties(session: nox.Session) -> None:
    """Every property test at its full example count (the hypothesis profile
    "properties"); ``nox -s tests`` runs the correctness properties at a
    fifth of it (docs/internals/test-suite.rst)."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-q",
        "-m",
        "hypothesis and not slow",
        "-n",
        "2",
        "--hypothesis-profile=properties",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests, benchmarks and examples."""
    session.install("-e", ".[lint]")
    session.run("mypy", "--strict")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx site (tutorial, guides, reference, internals); warnings
    and unresolved references (nitpicky, set in docs/conf.py) fail it."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-q", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session(python=PYTHON)
def sim(session: nox.Session) -> None:
    """Full simulations: SWIM at N = 1,000 and the election's fault and formation sets;
    prints measured values against each target and writes the tables."""
    session.install("-e", ".[test]")
    # Each script prints its table and exits non-zero if a target is missed;
    # the slow tests in tests/sim (pytest -m slow) assert the same runs.
    session.run("python", "-m", "benchmarks.sim_election", "--full")
    session.run("python", "-m", "benchmarks.sim_swim", "--full", *session.posargs)


@nox.session(python=PYTHON)
def virtual(session: nox.Session) -> None:
    """Whole clusters on FakeNetwork in virtual time: the seeded 20-node,
    10-minute fault run (twice, histories compared) and the user example."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-m", "slow", "tests/test_fake_network.py", *session.posargs)
    session.run("pytest", "-q", "examples/test_my_service.py")


@nox.session(python=PYTHON)
def multinode(session: nox.Session) -> None:
    """Real OS processes: examples across processes, SIGKILL and restart."""
    session.install("-e", ".[test]")
    session.run("python", "examples/swim_cluster.py", "both", "24380")
    session.run("python", "examples/leader_election.py", "both", "24390")
    session.run("python", "examples/supervised_service.py", "both", "24400")
    session.run("pytest", "-q", "tests/test_multiprocess.py", *session.posargs)
    # Cluster formation: 20 trials each of five processes started together,
    # one of them 3 s late, and the seed last.
    session.run("pytest", "-q", "-s", "-m", "slow", "tests/test_election.py", "-k", "formation")


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """A few minutes of churn across OS processes (short-lived processes that
    monitor, message, call, register and join), then every table must be
    back to its baseline and RSS growth under 10 %. CI runs it with
    ``-- --duration 60``."""
    session.install("-e", ".")
    session.run("python", "tests/soak/soak.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks between two OS processes, beside a raw trio + cbor2 baseline."""
    session.install("-e", ".")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session(python=PYTHON)
def faults(session: nox.Session) -> None:
    """Faults made by the kernel: five node processes in network namespaces
    (nft drops and rejects, ss -K, SIGSTOP, SIGKILL and restart), a history
    checker and a fault x invariant table. Needs root, ip, nft and ss;
    skips with the reason elsewhere. The full version by default; ``--
    --short`` is what CI runs, ``-- --scenario NAME`` runs one scenario."""
    session.install("-e", ".[test]")
    mode = [] if "--short" in session.posargs else ["--full"]
    session.run("python", "-m", "tests.faults.run", *mode, *session.posargs)


@nox.session(python=PYTHON)
def operations(session: nox.Session) -> None:
    """Operations across OS processes (docs/operations.rst): five nodes that
    find each other through ``file:`` and ``dns:`` (the latter in mount
    namespaces with their own /etc/hosts; skipped without root), a metrics
    scrape, then the rolling restart, which prints its table."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-s", "-m", "slow", "tests/test_operations.py", *session.posargs)


@nox.session(python=PYTHON)
def mutate(session: nox.Session) -> None:
    """Mutation testing of the protocol kernel (_proto/) and the codec: each
    module's mutants against its own test file; any survivor not listed in
    tests/mutation/equivalent.txt fails. ``-- MODULE`` runs one module
    (``-- frames``, ``-- codec``). CPU heavy (hours for all modules, minutes
    for a small one): not in CI; see docs/mutation.rst."""
    session.install("-e", ".[test]")
    session.run(
        "nice", "-n", "10", "python", "tests/mutation/mutate.py", *session.posargs, external=True
    )


@nox.session(python=PYTHON)
def cluster_procs(session: nox.Session) -> None:
    """100 nodes as 10 OS processes x 10 (docs/internals/cluster-processes.rst):
    ``-- --base DIR`` compares with a worktree of another commit in one
    sitting; ``-- --stability 600`` is the 10-minute run."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks.cluster_procs", *session.posargs)
