"""kopf's side of the controller: login, settings, and the four watches."""

from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client, config

from blackstart.names import RESCUE_POLICIES, WARM_STANDBY_POLICIES
from blackstart.rescue.controller.operator import Controller
from blackstart.rescue.crd.plans import PLURAL
from blackstart.rescue.crd.policy import GROUP, VERSION


def connection_from_kubeconfig(path: str, context: str | None = None) -> kopf.ConnectionInfo:
    """kopf's connection info from a kubeconfig file, read by the Kubernetes client's loader.

    The loader handles everything a kubeconfig may say (embedded or file
    certificates, tokens, exec credential plugins, auth providers); kopf gets
    the result.
    """
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration
        )
    except (config.ConfigException, OSError) as err:
        raise kopf.LoginError(f"cannot log in with kubeconfig {path}: {err}") from err
    token = None
    authorization = (configuration.api_key or {}).get("authorization")
    if authorization:
        token = str(authorization).removeprefix("Bearer ").strip()
    return kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        token=token,
    )


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf settings that keep its own load on the API server small and bounded."""
    settings.posting.enabled = False  # the controller posts its own, rate-limited Events
    settings.scanning.disabled = True  # resources are known: no CRD or namespace watching
    settings.watching.chunk_size = 500  # the first listing of a large fleet, in pages
    settings.watching.reconnect_backoff = 1.0
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]


def build_registry(
    controller: Controller, kubeconfig: str | None, context: str | None
) -> kopf.OperatorRegistry:
    """kopf's handlers for ``controller``: login, start/stop, and four watches."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig:
            return connection_from_kubeconfig(kubeconfig, context)
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        await controller.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await controller.stop()

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def node_event(event: Mapping[str, Any], body: Mapping[str, Any], **_: Any) -> None:
        await controller.on_node(event.get("type"), body)

    @kopf.on.event(GROUP, VERSION, RESCUE_POLICIES, registry=registry)
    async def policy_event(event: Mapping[str, Any], body: Mapping[str, Any], **_: Any) -> None:
        await controller.on_policy(event.get("type"), body)

    @kopf.on.event(GROUP, VERSION, WARM_STANDBY_POLICIES, registry=registry)
    async def standby_event(event: Mapping[str, Any], body: Mapping[str, Any], **_: Any) -> None:
        await controller.on_warm_standby_policy(event.get("type"), body)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def plan_event(event: Mapping[str, Any], body: Mapping[str, Any], **_: Any) -> None:
        await controller.on_plan(event.get("type"), body)

    return registry
