"""Flow logs: records of logged decisions (docs/policy.md "Flow log records"), the filter
that queries share, and the agent's shipping of its flow log files to the manager."""
