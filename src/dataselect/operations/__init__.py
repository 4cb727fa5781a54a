"""The operations: one per command, each taking one options object and returning a typed result.

An operation validates its options once, before any work, and takes its output's lock itself.
:mod:`dataselect.cli` and :mod:`dataselect.api` are two thin faces of these: the command line parses
text into the options (its defaults read from the options classes), the Python API takes keyword
arguments (its signatures made from them); neither declares a default or a check of its own.

==========  ============================  ==========================================
command     options                       result
==========  ============================  ==========================================
embed       :class:`EmbedJob`             the store's :class:`~dataselect.store.Manifest`
score       :class:`ScoreOptions`         :class:`Scored`
inspect     :class:`StoreOptions`         :class:`StoreSummary`
verify      :class:`StoreOptions`         :class:`Verified`
index       :class:`IndexOptions`         the index folder
neighbors   :class:`NeighborsOptions`     :class:`~dataselect.nearest.Neighbors`
run         :class:`~dataselect.selection_run.RunSpec`  :class:`SelectionResult` (saved)
(select)    :class:`~dataselect.selection_run.RunSpec`  :class:`SelectionResult` (not saved)
dedup       :class:`DedupOptions`         :class:`~dataselect.duplicates.Dedup`
methods     --                            {method: rule, source, parameters}
queries     :class:`QueriesOptions`       :class:`QueryFile`
export      :class:`ExportOptions`        :class:`Exported`
report      :class:`ReportOptions`        the report's path
compare     :class:`CompareOptions`       :class:`Findings`
explain     :class:`ExplainOptions`       :class:`Findings`
demo        :class:`DemoOptions`          :class:`DemoSummary`
==========  ============================  ==========================================
"""

from dataselect.operations.options import EngineOptions, Options, PoolOptions
from dataselect.operations.outputs import (
    CompareOptions,
    DemoOptions,
    DemoSummary,
    ExplainOptions,
    Exported,
    ExportOptions,
    Findings,
    ReportOptions,
    compare,
    demo,
    explain,
    export,
    report,
)
from dataselect.operations.selections import (
    DedupOptions,
    QueriesOptions,
    QueryFile,
    SelectionResult,
    dedup,
    load_selection,
    methods,
    queries,
    run,
    select,
)
from dataselect.operations.stores import (
    EmbedJob,
    IndexOptions,
    NeighborsOptions,
    Scored,
    ScoreOptions,
    StoreOptions,
    StoreSummary,
    Verified,
    embed,
    index,
    inspect,
    neighbors,
    score,
    verify,
)

# each command's operation, its options, and the names the API takes by position
COMMANDS = {
    "embed": (embed, EmbedJob, ("pool",)),
    "score": (score, ScoreOptions, ("store",)),
    "inspect": (inspect, StoreOptions, ("store",)),
    "verify": (verify, StoreOptions, ("store",)),
    "index": (index, IndexOptions, ("store",)),
    "neighbors": (neighbors, NeighborsOptions, ("store",)),
    "dedup": (dedup, DedupOptions, ("store",)),
    "queries": (queries, QueriesOptions, ("task",)),
    "export": (export, ExportOptions, ("selection",)),
    "report": (report, ReportOptions, ("selection",)),
    "compare": (compare, CompareOptions, ("selections",)),
    "explain": (explain, ExplainOptions, ("selection",)),
    "demo": (demo, DemoOptions, ()),
}  # run (select): RunSpec, whose other names are the method's parameters; methods: no options

__all__ = ["COMMANDS",
    "CompareOptions", "DedupOptions", "DemoOptions", "DemoSummary", "EmbedJob", "EngineOptions",
    "ExplainOptions", "ExportOptions", "Exported", "Findings", "IndexOptions", "NeighborsOptions", "Options",
    "PoolOptions", "QueriesOptions", "QueryFile", "ReportOptions", "ScoreOptions", "Scored", "SelectionResult",
    "StoreOptions", "StoreSummary", "Verified", "compare", "dedup", "demo", "embed", "explain", "export", "index",
    "inspect", "load_selection", "methods", "neighbors", "queries", "report", "run", "score", "select", "verify",
]
