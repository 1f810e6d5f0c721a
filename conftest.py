# Root conftest: makes the repository root importable (analytic, convergence) for pytest.
