"""Offline checks of Reporting's deployment tree (clusters/, infrastructure/, apps/).

Every check takes the root of a repository checkout and returns a list of violations
(human-readable strings); an empty list means the check holds. The tests in
deploy/validate/tests run each check on the real tree and on deliberately broken
copies of it.

Modules:
  tree      finding and rendering kustomizations (`kubectl kustomize`), what Flux applies
  schemas   strict schema validation: built-in kinds (kubernetes-validate), SealedSecret
            (its CRD made strict), Flux/Strimzi/CloudNativePG (strict subsets), eksctl
  eksctl    node groups: the checks eksctl's schema cannot express
  policy    resources, replicas, placement, probes, roles, grace periods, images
  secretpolicy  no plain secrets in git; needed Secrets come from strict SealedSecrets
  flux      the Flux Kustomization chain
  logging   the fluent-bit → GELF → Graylog path and the shape of log records
  monitoring  Prometheus scrape config, alert rules, Grafana dashboard
  dockerfile  structure of the image build
"""
