"""Home-network packages in the running service: the household's own tuning (R13, R16,
R17) and the expiry job.

:func:`household_tune` is the app's tuning: the router must be the family's (404
otherwise), managed (R12) and provisioned; then one tuning of a package covering it is
taken (:func:`devices.home_network_store.take_tuning`, refused citing R16 or R17; that
refusal comes before ``router_not_provisioned``) and committed *before* the router is
touched, so that two gateways cannot spend it twice.
Choice made here: a run that did not complete (the router failed, or sent no telemetry in
time) gives the tuning back; a completed run keeps it spent, whatever it changed. The
platform's own tuning (:func:`gateway.router_ops.tune_router` alone) never takes one.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices import home_network_store as store
from devices import router_store
from devices.errors import NotFound
from devices.home_network import tuning_package
from gateway import router_ops
from gateway.services import Services
from gateway.telemetry_hub import TelemetryTimeout


@dataclass(frozen=True, slots=True)
class HouseholdTuning:
    """The run, and the package whose tuning it used (None: given back, the run failed)."""

    tuning: router_ops.Tuning
    package_id: str | None


def _completed(tuning: router_ops.Tuning) -> bool:
    outcome = tuning.outcome
    return not isinstance(outcome, TelemetryTimeout) and outcome.failure is None


async def _give_back(services: Services, package_id: str, device_id: str) -> None:
    async with services.db.writing() as session:
        await store.release_tuning(session, package_id, device_id)
        await session.commit()


async def household_tune(
    services: Services, device_id: str, *, account_id: str, telemetry_timeout: float
) -> HouseholdTuning:
    """The family's tuning of its router, paid by one of its packages (see the module)."""
    target = await router_ops.find_router(services, device_id)
    if target.account.account_id != account_id:
        raise NotFound("router", device_id)
    router_store.require_managed(target.account)
    now = services.clock.now()
    async with services.db.session() as session:
        # The family hears first whether it has a tuning at all (R16, R17).
        tuning_package(await store.holdings_of(session, device_id), device_id, now)
    if target.creds is None:
        raise router_store.NotProvisioned(device_id)
    async with services.db.writing() as session:
        package_id = await store.take_tuning(session, device_id, services.clock.now())
        await session.commit()
    try:
        tuning = await router_ops.tune_router(
            services, device_id, telemetry_timeout=telemetry_timeout
        )
    except BaseException:
        await _give_back(services, package_id, device_id)
        raise
    if not _completed(tuning):
        await _give_back(services, package_id, device_id)
        return HouseholdTuning(tuning, None)
    return HouseholdTuning(tuning, package_id)


async def expire(services: Services) -> None:
    """R16/R17: packages end at the end of their validity; idempotent, and a job that was
    down ends the overdue ones as of their own end when it runs again."""
    now = services.clock.now()
    await services.db.write(
        lambda session: store.expire_packages(session, now), name="home-network expiry"
    )
