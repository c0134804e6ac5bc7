"""Monitoring of deployments: request sampling in the gateway, drift checks against the training prompts, reports.

sampler            the gateway's RequestObserver: samples redacted and capped, written off the request path
samples            the sampling store: samples, per-deployment policies, cap, retention, traffic figures
prompts            redaction and caps of stored prompts; the tokens the checks count
reference          the prompts of the dataset a model was trained on, from the config repository at its commit
length_psi | vocabulary | domain_classifier        the three detectors, each with its own threshold
declaration        windows (minimum size, no overlap) and when a drift is declared (two drifting in a row)
report             DriftReport, and its rows
checks             one check: the detectors on a window against a prepared reference
service            Monitoring (Workspace.monitoring): check, overview, sampling policy, `on_drift_declared`
scheduler          the checks on a schedule inside the app;  cronjob: the Kubernetes CronJob (pure function)
"""
