"""`/weights`: the encoder weights this backend keeps, so that a remote backend fetches
its own (`POST /jobs` of type `weights` downloads, `weights-import` copies a file)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from ..errors import InputError
from .deps import ServiceState, service
from .schemas import ERRORS, WeightsList
from .security import require_token
from .users import Caller

router = APIRouter(dependencies=[Depends(require_token)], responses=ERRORS, tags=["weights"])
State = Annotated[ServiceState, Depends(service)]


@router.get("/weights", response_model=WeightsList)
def list_all(svc: State) -> dict[str, Any]:
    """Installed weights (name, size, SHA-256, source, what they are) and the catalog."""
    from ..tasks.weights import list_weights

    return list_weights(svc.weights)


@router.delete("/weights/{name}")
def remove(name: str, svc: State, caller: Annotated[Caller, Depends(require_token)]
           ) -> dict[str, Any]:
    """Remove installed weights (an admin only: everyone's jobs use them); refused (409)
    while a queued or running job names them."""
    from ..tasks.weights import remove_weights

    if not caller.admin:
        raise HTTPException(403, f"weights are shared by everyone on this service; only an "
                            f"admin may remove {name!r}")
    path = svc.weights.find(name)
    if path is None:
        raise HTTPException(404, f"no weights named {name!r} (GET /weights lists them)")
    for state in ("queued", "running"):
        for record in svc.store.list(state, None, 1000):
            if str(path) in map(str, record.params.values()):
                raise HTTPException(409, f"job {record.id} ({state}) uses {name!r}; cancel it first")
    try:
        return remove_weights(name, svc.weights)
    except InputError as exc:
        raise HTTPException(404, str(exc)) from exc
