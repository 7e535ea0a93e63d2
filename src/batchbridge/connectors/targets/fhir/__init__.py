"""The FHIR R4 target, one module per concern: `target` (the Target protocol: a load as
transaction Bundles, counted and confirmed; built from a feed's config by
`build_fhir_target`), `bundle` (building Bundles, reading their answers, bisecting a
refused one down to the refused rows), `unchanged` (rows the server already holds as
they are, found before sending), `confirm` (searching resources by identifier),
`snapshot` (full snapshots: the tenant tag, absent resources marked inactive), `probe`
(the health probe), `auth` (OAuth2 client-credentials tokens through authlib) and `wire`
(URLs, search tokens, next links, answers, transient HTTP errors). The feed's schema
comes in from the target registry as a `SupportsFhir` object: nothing here looks schemas
up. Like every connector it may import config, validations (base types only), ledger,
errors, crashpoints, progress and the other connectors modules (retry, secrets, webhook's
Retry-After parser); never tasks, flows, cli, steward or monitoring.
"""

from batchbridge.connectors.targets.fhir.auth import ClientCredentials
from batchbridge.connectors.targets.fhir.bundle import NO_CHANGE_CODES, STORAGE_RESPONSE_SYSTEM
from batchbridge.connectors.targets.fhir.confirm import CONFIRM_CHUNK
from batchbridge.connectors.targets.fhir.snapshot import TENANT_TAG_SYSTEM
from batchbridge.connectors.targets.fhir.target import FhirTarget, build_fhir_target
from batchbridge.connectors.targets.fhir.wire import check_fhir_url

__all__ = [
    "CONFIRM_CHUNK",
    "NO_CHANGE_CODES",
    "STORAGE_RESPONSE_SYSTEM",
    "TENANT_TAG_SYSTEM",
    "ClientCredentials",
    "FhirTarget",
    "build_fhir_target",
    "check_fhir_url",
]
