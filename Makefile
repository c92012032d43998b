# The two commands of the README, and the checks CI runs before them.
.PHONY: demo test check

demo: ## run the demo against PostgreSQL and Redis containers
	scripts/demo.sh

test: ## run the whole test suite against real PostgreSQL and Redis
	scripts/test.sh

check: ## gofmt and go vet
	scripts/check.sh

