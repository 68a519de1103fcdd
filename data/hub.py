"""Data sets from the Hugging Face Hub, or one line that says what to pass instead.

Without a network `datasets.load_dataset` retries for about 27 s and then fails with a long
traceback. A HEAD request to the Hub (3 s at most, through the environment's proxies) finds that
out at once. HF_HUB_OFFLINE=1 (or HF_DATASETS_OFFLINE=1) skips the check and uses the local
`datasets` cache.
"""
import os
import ssl
import urllib.error
import urllib.request

from minicore.errors import UserError

SCRIPTS_REFUSED = "Dataset scripts are no longer supported"  # datasets 4's RuntimeError for a loading script


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def offline() -> bool:
    """Whether the environment asks for the local cache only (the values huggingface_hub reads as true)."""
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub answers at all: any HTTP status counts, and so does a certificate error
    (a proxy or a private CA is the user's business, not a missing network)."""
    try:
        urllib.request.urlopen(urllib.request.Request(hub_endpoint(), method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except OSError as e:  # URLError, timeouts, refused connections
        return isinstance(getattr(e, "reason", e), ssl.SSLError)
    return True


def load_hub_dataset(instead: str, *args, **kwargs):
    """`datasets.load_dataset(*args, **kwargs)`; when the Hub cannot be reached (or, offline, the
    data set is not in the cache), when the data set is not there (renamed or removed), or when it is
    still a loading script (which datasets 4 and later refuse to run), a UserError naming the data set
    whose fix is `instead`."""
    name = " ".join(str(a) for a in args if a is not None)
    if not offline() and not hub_reachable():
        raise UserError(f"cannot reach the Hugging Face Hub to load {name}", hub_endpoint(),
                        fix=f"{instead}; HF_HUB_OFFLINE=1 uses a copy in the datasets cache if there is one")
    import datasets  # only here: the scripts run without it when given local files

    try:
        return datasets.load_dataset(*args, **kwargs)
    except ConnectionError as e:  # offline and not in the cache, or the network went away
        raise UserError(f"cannot load {name} from the Hugging Face Hub ({e})", fix=instead) from None
    except datasets.exceptions.DatasetNotFoundError:
        raise UserError(f"{name} is not on the Hugging Face Hub (renamed or removed)", hub_endpoint(),
                        fix=instead) from None
    except RuntimeError as e:
        if SCRIPTS_REFUSED not in str(e):
            raise
        raise UserError(f"{name} on the Hugging Face Hub is a loading script, which datasets {datasets.__version__} "
                        "no longer runs", fix=instead) from None
