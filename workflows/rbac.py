"""`kolora-rbac.yaml`: the ServiceAccount the dist workflows name and the RBAC Argo's executor needs in their pods.

    kubectl apply -n argo -f workflows/dist/kolora-rbac.yaml

The workflows run their pods as `RenderOptions.service_account` (`kolora-workflow`) with
`automountServiceAccountToken: false` and the same account as `executor.serviceAccountName`: the step
containers get no token, Argo's init and wait containers get this one, which may only report the steps'
outputs (`workflowtaskresults` create/patch, Argo v3.4+). Argo mounts the executor's token from the Secret the
account's annotation `TOKEN_ANNOTATION` names (Kubernetes 1.24+ no longer creates one; Kubernetes fills in the
token of a `service-account-token` Secret), so the file holds that Secret too. The Helm chart creates the same
objects (helm/kolora/templates/workflow-*.yaml; a test keeps them equal). Plain objects, not hera: hera models only Argo's kinds.
"""

from __future__ import annotations

from typing import Any

from workflows.options import RenderOptions

TOKEN_ANNOTATION = "workflows.argoproj.io/service-account-token.name"  # where Argo looks up the token Secret (util/secrets)
EXECUTOR_RULES = [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}]


def build(options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """ServiceAccount, its token Secret, Role and RoleBinding (namespace: the one they are applied to)."""
    options = options or RenderOptions()
    name = options.service_account or "default"
    labels = {
        "app.kubernetes.io/name": "kolora",
        "app.kubernetes.io/version": options.version,
        "app.kubernetes.io/component": "workflow",
    }
    meta = {"name": name, "labels": labels}
    objects: list[dict[str, Any]] = []
    token = f"{name}-token"
    if options.service_account:  # the namespace's `default` exists already (annotate it yourself)
        sa_meta = {**meta, "annotations": {TOKEN_ANNOTATION: token}}
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": sa_meta, "automountServiceAccountToken": False})
    token_meta = {"name": token, "labels": labels, "annotations": {"kubernetes.io/service-account.name": name}}
    objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": token_meta, "type": "kubernetes.io/service-account-token"})
    objects += [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {**meta, "name": f"{name}-executor"},
            "rules": EXECUTOR_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {**meta, "name": f"{name}-executor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{name}-executor"},
            "subjects": [{"kind": "ServiceAccount", "name": name}],
        },
    ]
    return objects
