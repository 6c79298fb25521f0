"""The fleet's make-up (pure): households of cameras, routers and satellites."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from simulators.credentials import Credentials
from simulators.fleet.options import PlanShare

Role = Literal["camera", "router", "satellite"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    device_id: str
    role: Role
    plan: str | None = None
    rogue: bool = False
    #: The device's own broker identity (issue 13); none: the URL's, or anonymous.
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> Literal["camera", "router"]:
        return "camera" if self.role == "camera" else "router"

    def signed_in(self, credentials: Credentials | None) -> DeviceSpec:
        """This device with the username and password issued to it (as is without)."""
        if credentials is None:
            return self
        return replace(self, username=credentials.username, password=credentials.password)


@dataclass(frozen=True, slots=True, kw_only=True)
class HouseholdSpec:
    account_id: str
    owner_id: str
    star_level: int
    devices: tuple[DeviceSpec, ...]
    #: The home-network product the router holds (R16, R17), ordered at provisioning.
    home_product: str | None = None
    #: The family-cloud membership tier the account holds (R18), ordered at provisioning.
    membership: str | None = None

    @property
    def cameras(self) -> tuple[DeviceSpec, ...]:
        return tuple(d for d in self.devices if d.role == "camera")

    @property
    def router(self) -> DeviceSpec | None:
        """The household's main router (satellites are routers too, of its mesh)."""
        return next((d for d in self.devices if d.role == "router"), None)


def plan_fleet(
    *,
    households: int,
    plans: Sequence[PlanShare],
    seed: int,
    prefix: str,
    rogue_share: float = 0.0,
    home_products: Sequence[PlanShare] = (),
    memberships: Sequence[PlanShare] = (),
) -> tuple[HouseholdSpec, ...]:
    """The households of a run: the same arguments always give the same fleet (the home
    products and the memberships drawn apart, so that a mix of them changes nothing else)."""
    rng = random.Random(f"fleet:{seed}")
    home_rng = random.Random(f"fleet-home:{seed}")
    member_rng = random.Random(f"fleet-membership:{seed}")
    products = [share.plan for share in home_products]
    product_weights = [share.weight for share in home_products]
    tiers = [share.plan for share in memberships]
    tier_weights = [share.weight for share in memberships]
    choices = [share.plan for share in plans]
    weights = [share.weight for share in plans]
    fleet = []
    for n in range(1, households + 1):
        home = f"{prefix}-h{n:05d}"
        devices: list[DeviceSpec] = []
        for c in range(1, rng.randint(1, 3) + 1):
            plan = rng.choices(choices, weights)[0]
            rogue = rng.random() < rogue_share
            devices.append(
                DeviceSpec(device_id=f"{home}-cam{c}", role="camera", plan=plan, rogue=rogue)
            )
        devices.append(DeviceSpec(device_id=f"{home}-rt", role="router"))
        for s in range(1, rng.randint(0, 2) + 1):
            devices.append(DeviceSpec(device_id=f"{home}-sat{s}", role="satellite"))
        fleet.append(
            HouseholdSpec(
                account_id=home,
                owner_id=f"{home}-owner",
                star_level=rng.randint(1, 7),
                devices=tuple(devices),
                home_product=(home_rng.choices(products, product_weights)[0] if products else None),
                membership=member_rng.choices(tiers, tier_weights)[0] if tiers else None,
            )
        )
    return tuple(fleet)
