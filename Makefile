# The two commands of the README, and the checks CI runs before them.
.PHONY: demo test check bench

demo: ## run the demo against PostgreSQL and Redis containers
	scripts/demo.sh

test: ## run the whole test suite against real PostgreSQL and Redis
	scripts/test.sh

check: ## gofmt and go vet
	scripts/check.sh


bench: ## run the benchmarks (figures in README) against PostgreSQL and Redis containers
	scripts/bench.sh
