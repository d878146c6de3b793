# Targets for a local single-node Kafka broker on 127.0.0.1 (scripts/kafka.sh).
# Include this file from the top-level Makefile:
#
#   include make/kafka.mk
#
# The settings of scripts/kafka.sh (KAFKA_PORT, KAFKA_DATA, KAFKA_HOME,
# KAFKA_VERSION, KAFKA_HEAP_OPTS, KAFKA_START_TIMEOUT, and the secure listeners'
# KAFKA_SSL_PORT, KAFKA_SASL_SSL_PORT and the others that `scripts/kafka.sh
# --help` lists) pass through from the environment or the make command line,
# e.g. `make kafka KAFKA_PORT=auto`, because make exports both to recipes.

# Directory of the repository, found from this file's path, so the targets
# also work with `make -C` and `make -f`.
KAFKA_MK_REPO_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
KAFKA_SH := bash $(KAFKA_MK_REPO_ROOT)/scripts/kafka.sh

.PHONY: kafka kafka-stop kafka-status kafka-fetch

kafka: ## Start the local Kafka broker (fetches the jars on first use)
	@$(KAFKA_SH) start

kafka-stop: ## Stop the local Kafka broker
	@$(KAFKA_SH) stop

# kafka.sh status exits 3 when no broker runs, which is not an error here.
kafka-status: ## Show whether the local Kafka broker runs and where
	@$(KAFKA_SH) status || [ $$? -eq 3 ]

kafka-fetch: ## Fetch the Kafka jars from Maven Central with Maven
	@$(KAFKA_SH) fetch
