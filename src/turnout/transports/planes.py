"""Which routes a listener serves.

The admin plane changes state (the repository's load and unload, and the
routing and lifecycle actions to come). By default it has a listener of its
own, on 127.0.0.1, and the public listeners answer its routes with a
refusal that says where it is; ``BOTH`` serves everything on one listener,
still only to the admin role.
"""

from __future__ import annotations

import enum


class Plane(enum.Enum):
    INFERENCE = "inference"
    ADMIN = "admin"
    BOTH = "both"

    @property
    def serves_inference(self) -> bool:
        return self is not Plane.ADMIN

    @property
    def serves_admin(self) -> bool:
        return self is not Plane.INFERENCE


def admin_elsewhere_message(where: str) -> str:
    place = f" ({where})" if where else ""
    return (
        f"changing the model repository is done on the admin plane{place}, not on this port; "
        "see the README's Security section"
    )
