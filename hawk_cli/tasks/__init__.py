"""Jobs built on the engine: the benchmark, calibration, evaluation and the exactness oracle. Never print."""
