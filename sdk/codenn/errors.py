"""Every error codenn raises on purpose derives from :class:`CodennError`.

Messages follow one rule: say what failed, the value received, and what is valid, so that a
user never has to read a traceback from deep inside torch to learn what they did wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class CodennError(Exception):
    """Base class of all errors codenn raises for bad input, bad plugins or bad state."""


class PluginError(CodennError):
    """A plugin failed to load, implements an unknown hook, or registered something invalid."""


class DuplicateNameError(PluginError):
    """Two plugins (or one plugin twice) registered the same name in one registry."""


class UnknownNameError(CodennError, KeyError):
    """A name was looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SplitError(CodennError):
    """A model cannot be cut into blocks as asked."""


class BoundaryMismatchError(CodennError):
    """A tensor or a link does not fit the boundary it is meant for."""


class PathSpecError(CodennError, ValueError):
    """A path specification is malformed or refers to blocks that do not exist."""


class ConfigError(CodennError, ValueError):
    """A configuration value is out of range or inconsistent."""


class PathShapeError(PathSpecError, ConfigError):
    """A valid path of a shape this use does not take (e.g. not ``local > host > local``); a
    ConfigError too, which is what such a path raised before the check was one method."""


class FrozenParameterError(CodennError):
    """A provider's frozen parameters changed, or were about to be trained."""


class MissingWeightsError(ConfigError):
    """A base model's cached weights are not where a worker (or a command that must not train)
    looked for them."""


class ExecutorError(CodennError):
    """A search executor could not reach its workers, set them up, or keep them alive."""


def available(names: Iterable[str]) -> str:
    """Format the valid choices for an error message."""
    listed = sorted(names)
    return ", ".join(repr(n) for n in listed) if listed else "(none registered)"


class ExportError(CodennError):
    """A path cannot be exported (to ONNX) as asked, or its export fails a check."""


class TransportError(CodennError):
    """A call to a host provider through a transport failed."""


class HostUnavailableError(TransportError):
    """The host is down, unreachable, overloaded (5xx) or did not answer within the timeout.

    A coordinator catches this to fall back to a local path: the request itself was fine.
    """


class HostRejectedError(TransportError):
    """The host answered, but refused the request (bad token, payload too large, wrong shape...).

    ``status`` is the HTTP-style status code the host gave (401, 413, 422, ...). Retrying the same
    request elsewhere will not help; the request or the credentials must change.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class NonFiniteError(BoundaryMismatchError):
    """A tensor holds NaN or infinite values where only finite ones are valid: an input or a
    gradient sent to a host, an output a model produced, or link weights a training step made.
    A host answers 422 to it and never applies such a step."""


class BadHostReplyError(HostUnavailableError):
    """The host answered 200, but the answer is not what the call needs (wrong shape, dtype or
    batch, non-finite values, no numeric compute time). Treated like a down host: the caller
    falls back locally, and the host's failure count goes up."""


class RequestError(CodennError):
    """A request a codenn server refuses; the HTTP shell maps each subclass to one status
    (``codenn_adapters.host_server.STATUS``). ``headers`` go with the answer (``WWW-Authenticate``,
    ``Connection: close`` when part of a body was left unread)."""

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})


class UnauthenticatedError(RequestError):
    """No bearer token, or one no registered provider holds (401)."""


class ForbiddenError(RequestError):
    """The caller is registered but has no right to do this to this model (403)."""


class ModelNotFoundError(RequestError):
    """No served model of that name among those the caller may use, or it does not offer what was
    asked (split training of an inference-only model) (404)."""


class RequestTimeoutError(RequestError):
    """The body did not arrive within the server's deadline (408)."""


class PayloadTooLargeError(RequestError):
    """A body, or the answer it would need, is over the server's size cap (413)."""


class MalformedRequestError(RequestError):
    """A request that cannot be parsed at all (400); a well-formed one whose tensors do not fit is
    a :class:`BoundaryMismatchError` (422)."""


class ConflictError(RequestError):
    """A request that does not fit the server's state now: split training turned off here, or a
    step the segment does not hold (409)."""
