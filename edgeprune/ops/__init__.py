"""Operations on a finished run (and on models that ``compress`` did not make), beside the pipeline in
edgeprune.stages: re-audit, export again, bundle for a Jetson, benchmark, model inversion, split deployment.
Each is one function of edgeprune.api, the API the CLI calls."""
