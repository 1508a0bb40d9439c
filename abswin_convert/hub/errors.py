"""The Hub client's errors as one-line AbswinErrors, for fetching and for pushing alike. Never carries the token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from huggingface_hub import constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    HTTPError,  # the client's HTTP library's base error: a failed connection shows as one
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import AbswinError, first_line

TOKEN_HINT = "set HF_TOKEN to a token with write access, or run `hf auth login`"
OFFLINE_HINT = "set HF_HUB_OFFLINE=1 to use files already in the Hugging Face cache"


@contextmanager
def hub_errors(action: str, repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Translate what the client raises inside the block; ``action`` says what was being done ("fetch X",
    "push to X"), ``revision`` the revision asked for, when one was."""
    endpoint = constants.ENDPOINT
    try:
        yield
    except RepositoryNotFoundError as error:
        raise AbswinError(
            f"no Hub repository {repo_id!r} at {endpoint} (and it is not a local path either); "
            "if the repo is private or gated, set HF_TOKEN"
        ) from error
    except RevisionNotFoundError as error:
        said = f"Hub repository {repo_id!r} has no revision {revision!r}" if revision else f"{repo_id}: {first_line(error)}"
        raise AbswinError(said) from error
    except RemoteEntryNotFoundError as error:
        raise AbswinError(f"file not found on the Hub: {error.response.url}") from error
    except LocalTokenNotFoundError as error:
        raise AbswinError(f"no Hub token to {action}; {TOKEN_HINT}") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        hint = f"; {TOKEN_HINT}" if status in (401, 403) else ""
        raise AbswinError(f"the Hub at {endpoint} refused to {action}: {first_line(error)}{hint}") from error
    except (HTTPError, LocalEntryNotFoundError) as error:  # HTTPError after HfHubHTTPError, which is one too
        raise AbswinError(f"cannot connect to {endpoint} to {action} ({first_line(error)}); {OFFLINE_HINT}") from error
