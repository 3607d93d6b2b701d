"""DitwebError: the one base class of the errors that untrusted input (bundles, checkpoints, data,
command-line arguments) can cause. The `ditweb` command prints these as one line (exit status 2);
anything else is a bug and keeps its traceback. A ValueError subclass, so callers that already
catch ValueError keep working."""


class DitwebError(ValueError):
    """Bad input; the message names the file / argument and what is wrong."""


class UsageError(DitwebError):
    """Bad input from the command line: printed as one line, exit status 2."""


class NonFiniteError(DitwebError):
    """NaN or Inf where numbers must be finite: weights, a loss, sampled latents or an output; the message
    names where (the tensor, the step, the runtime)."""
