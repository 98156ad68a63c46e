"""The errors the shared-memory library raises, so callers can tell them apart."""


class ShmError(Exception):
    """Base class of every shared-memory error."""


class SegmentExistsError(ShmError):
    """A segment of that name exists and its owner is alive."""


class SegmentNotFoundError(ShmError):
    """No segment of that name exists."""


class HeaderMismatchError(ShmError):
    """The segment's header does not describe what the caller expects."""


class StaleSegmentError(ShmError):
    """The process that created the segment is gone; nobody vouches for its contents."""


class RoleTakenError(ShmError):
    """A live process already holds that side (producer or consumer) of the ring."""
