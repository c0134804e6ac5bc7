"""Serving registry versions: the gateway (ASGI) in front of a model server, run locally or on Kubernetes.

keys.py          API keys: generated once, stored as sha256 hashes, checked in constant time
observers.py     the hook for request sampling (monitoring): never blocks or fails a request
metrics.py       the gateway's Prometheus metrics (a registry per gateway)
gateway.py       the ASGI app and the gateway process (`python -m backend.serving.gateway`)
httpserver.py    uvicorn on a pre-bound socket, or in a thread
process.py       detached, supervised processes re-attached by pid + create time
local_server.py  LLaMA-Factory's `llamafactory-cli api` for a registry version, with its gateway, on this machine
manifests.py     the Kubernetes objects of a deployment, as pure functions
"""
