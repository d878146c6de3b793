"""Paths the worker's web server serves, shared by the code, the tests and the deployment files."""

METRICS = "/metrics"  # Prometheus text format
LIVE = "/nurture/health/live"  # 200 while the worker process runs its event loop
READY = "/nurture/health/ready"  # 200 once the tables are recovered and the agent consumes
MODELS = "/nurture/models/"
SLA = "/nurture/sla/"  # delivery figures and objectives per channel, as JSON
DASHBOARD = "/nurture/dashboard/"  # the dashboard page; served without the token, it contains no data
API_OVERVIEW = "/nurture/api/overview"  # throughput, lag, scores, funnel and commands of this worker, as JSON
API_LEAD = "/nurture/api/leads/{lead_id}"  # one lead's timeline from this worker's table, as JSON
API_LEAD_CONSENT = "/nurture/api/leads/{lead_id}/consent"  # consent state and ledger entries, as JSON
API_LEAD_EXPORT = "/nurture/api/leads/{lead_id}/export"  # everything held about the lead, as JSON
API_LEAD_ERASE = "/nurture/api/leads/{lead_id}/erase"  # POST: queue an erasure request; 202 with its id
