"""Least-privilege check for template.yaml (run by infra/test.sh after cfn-lint and sam validate).

Fails when a function's policy
- uses a SAM policy template or a managed policy (they grant more than Tollgate uses),
- names an action with a wildcard (`dynamodb:*`, `*`),
- grants `Resource: "*"` for an action that supports resource-level permissions (only the
  actions in NO_RESOURCE_LEVEL may use `*`, and only with a Condition narrowing them),
- grants Secrets Manager access to anything but a named secret parameter,
- grants DynamoDB access without a `ForAllValues:StringLike` `dynamodb:LeadingKeys` condition
  (only the tables in UNCONDITIONED_TABLES may go without, each for the reason given there),
- grants, per table (or index) and action, other partition-key prefixes than EXPECTED says
  the function's code uses: wider fails, and so does narrower (the code would be refused),
- or EXPECTED names a prefix that no string literal under shared/src opens (a renamed key);
- and Bedrock: only invoke may call it, only with InvokeModel and InvokeModelWithResponseStream,
  and only on the models and profiles the operator lists (the `BedrockResourceArns` parameter,
  whose default must hold no wildcard), never on an ARN pattern.

Every run then proves the check itself: it widens (and narrows) copies of the template in the
ways issue 12 found or could recur, and fails unless each copy is refused (`self_test`).

Usage: python infra/check_policies.py template.yaml
"""

import copy
import re
import sys
from pathlib import Path

from cfnlint.decode import decode

# Actions IAM cannot scope to a resource (per the service authorization reference); each must
# carry a Condition instead.
NO_RESOURCE_LEVEL = {"cloudwatch:PutMetricData"}

# DynamoDB actions whose every request names the partition keys of the items it touches (for
# a Query on an index: the index's partition key), so a LeadingKeys condition binds them.
# Any other action (Scan, PartiQL, DescribeTable...) has no leading keys, and `ForAllValues`
# over an empty set is true: the condition would allow it everywhere.
KEYED_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
}

LEADING_KEYS = "dynamodb:LeadingKeys"
# `ForAnyValue` would admit a BatchGetItem with one matching key among others.
LEADING_KEYS_OPERATOR = "ForAllValues:StringLike"

# Tables a function may use without a LeadingKeys condition, and why none could narrow it.
UNCONDITIONED_TABLES = {
    "CacheTable": (
        "one item type only, keyed `{tenant}#{sha256}` (domain/cache_key.rs); the role serves "
        "every tenant, so no prefix pattern excludes anything"
    ),
}

# Bedrock: the one function that calls it, the actions Converse and ConverseStream need, and
# the parameter listing the model and profile ARNs it may call them on.
BEDROCK_FUNCTION = "InvokeFunction"
BEDROCK_ACTIONS = {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}
BEDROCK_PARAMETER = "BedrockResourceArns"

# Any key: for the UNCONDITIONED_TABLES.
ANY = "*"

# What each function's code reads and writes, as (table logical id, or `Table/index`) ->
# action -> partition-key prefixes. Derived from the DynamoDB adapters
# (shared/src/adapters/dynamodb/*.rs: each module's header lists its items) and the ports each
# function's main.rs / lib.rs wires. TransactWriteItems counts as its items' Put / Update.
EXPECTED = {
    # ChatStore (shared/src/bootstrap.rs): keys, configs, fine-tuned owners, catalog, profiles,
    # usage record (event Put, rollup Update, limiter Updates), conversations, limiter, cache.
    "InvokeFunction": {
        "TenantsTable": {
            "dynamodb:GetItem": {"KEY#", "TENANT#", "FT#", "PROFILE#"},
            "dynamodb:Query": {"PRICE#", "QUOTA#"},
            "dynamodb:PutItem": {"PROFILE#"},
            "dynamodb:DeleteItem": {"PROFILE#"},
        },
        "UsageTable": {
            "dynamodb:PutItem": {"EVENT#", "CONV#", "BUDGET#"},
            "dynamodb:UpdateItem": {"ROLLUP#"},
            "dynamodb:Query": {"CONV#"},
        },
        # The reservation's guards on the neighbouring buckets are ConditionChecks.
        "LimitsTable": {
            "dynamodb:BatchGetItem": {"t#", "u#"},
            # Window counters, and each key's last use (k#).
            "dynamodb:UpdateItem": {"t#", "u#", "k#"},
            "dynamodb:ConditionCheckItem": {"t#", "u#"},
        },
        "CacheTable": {
            "dynamodb:GetItem": ANY,
            "dynamodb:PutItem": ANY,
        },
    },
    # IngestService (bootstrap::ingest_service_on): keys, configs, catalog, the document
    # registry with its storage counter (dynamodb/documents.rs: entry and counter read by
    # BatchGetItem, claims/commits/removals as TransactWriteItems of Update and Delete, pages by
    # Query), the limiter (a tokens-only reservation per document: snapshot BatchGetItem,
    # guarded Updates with ConditionChecks), and embedding usage (event Put, rollup Update, the
    # reservation's settling Updates).
    "IngestFunction": {
        "TenantsTable": {
            "dynamodb:GetItem": {"KEY#", "TENANT#"},
            "dynamodb:BatchGetItem": {"DOCS#"},
            "dynamodb:Query": {"PRICE#", "QUOTA#", "DOCS#"},
            "dynamodb:UpdateItem": {"DOCS#"},
            "dynamodb:DeleteItem": {"DOCS#"},
        },
        "UsageTable": {
            "dynamodb:PutItem": {"EVENT#", "BUDGET#"},
            "dynamodb:UpdateItem": {"ROLLUP#"},
        },
        "LimitsTable": {
            "dynamodb:BatchGetItem": {"t#", "u#"},
            # Window counters, and each key's last use (k#).
            "dynamodb:UpdateItem": {"t#", "u#", "k#"},
            "dynamodb:ConditionCheckItem": {"t#", "u#"},
        },
    },
    # UsageReportState::on: keys, configs, rollups (UsageQuery::rollups), events page, keys'
    # last use.
    "UsageReportFunction": {
        "TenantsTable": {
            "dynamodb:GetItem": {"KEY#", "TENANT#"},
        },
        "UsageTable": {
            "dynamodb:Query": {"ROLLUP#"},
        },
        "UsageTable/by_tenant_time": {
            "dynamodb:Query": {"TENANT#"},
        },
        # Each key's last use (KeyUses, on every authenticated request, throttled).
        "LimitsTable": {
            "dynamodb:UpdateItem": {"k#"},
        },
    },
    # AdminState (functions/admin): tenant_admin, key_admin, budget_admin (a tenant's spend
    # counters, read) and catalog_admin over the store. The only function that writes tenant
    # configurations, keys, prices and quotas (no other entry grants a write on TENANT#,
    # KEY#, PRICE# or QUOTA#, and each function's grants must equal its entry).
    "AdminFunction": {
        "TenantsTable": {
            "dynamodb:GetItem": {"KEY#", "TENANT#", "FT#", "PRICE#"},
            "dynamodb:UpdateItem": {"KEY#", "TENANT#", "PRICE#"},
            "dynamodb:PutItem": {"KEY#", "AUDIT#", "PRICE#", "QUOTA#"},
            "dynamodb:Query": {"AUDIT#", "PRICE#", "QUOTA#"},
        },
        "TenantsTable/by_tenant": {
            "dynamodb:Query": {"TENANTS", "TENANT#"},
        },
        "LimitsTable": {
            "dynamodb:BatchGetItem": {"k#", "t#"},
        },
    },
    # SchedulerStore: UsageActivity (by_hour), UsageQuery::rollups, AnomalyStore::record_anomaly,
    # BudgetEventStore (dynamodb/budget_events.rs), a reset's spend counter (LimiterStore read).
    "AnomalySchedulerFunction": {
        "UsageTable": {
            "dynamodb:Query": {"ROLLUP#", "BUDGET#"},
            "dynamodb:PutItem": {"ANOMALY#", "BUDGET#"},
            "dynamodb:GetItem": {"BUDGET#"},
            "dynamodb:UpdateItem": {"BUDGET#"},
        },
        "LimitsTable": {
            "dynamodb:BatchGetItem": {"t#"},
        },
        "UsageTable/by_hour": {
            "dynamodb:Query": {"HOUR#"},
        },
    },
}

# Where the key layouts live: every prefix in EXPECTED must open a string literal there, so
# renaming an item type in Rust fails here rather than as AccessDenied after a deploy.
SOURCES = Path(__file__).resolve().parent.parent / "shared" / "src"

PREFIX_PATTERN = re.compile(r"^[^*?]+\*$")
INDEX_ARN = re.compile(r"^\$\{([A-Za-z0-9]+)\.Arn\}/index/([A-Za-z0-9_.-]+)$")


def statements(policies):
    for policy in policies:
        if isinstance(policy, dict) and "Statement" in policy:
            for statement in policy["Statement"]:
                # `!If [cond, statement, !Ref AWS::NoValue]`
                if isinstance(statement, dict) and "Fn::If" in statement:
                    for branch in statement["Fn::If"][1:]:
                        if isinstance(branch, dict) and "Ref" not in branch:
                            yield branch
                else:
                    yield statement
        else:
            yield {"__template__": policy}


def as_list(value):
    return value if isinstance(value, list) else [value]


def functions_of(template):
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }


def table_target(template, resource):
    """`TenantsTable` for `!GetAtt TenantsTable.Arn`, `UsageTable/by_hour` for
    `!Sub "${UsageTable.Arn}/index/by_hour"` when the table has that index; None otherwise."""
    table, index = None, None
    if isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"}:
        ref = resource["Fn::GetAtt"]
        ref = ref.split(".") if isinstance(ref, str) else ref
        if len(ref) == 2 and ref[1] == "Arn":
            table = ref[0]
    elif isinstance(resource, dict) and set(resource) == {"Fn::Sub"}:
        match = INDEX_ARN.match(resource["Fn::Sub"]) if isinstance(resource["Fn::Sub"], str) else None
        if match:
            table, index = match.groups()
    definition = template["Resources"].get(table) if table else None
    if not definition or definition.get("Type") != "AWS::DynamoDB::Table":
        return None
    if index is None:
        return table
    indexes = definition.get("Properties", {}).get("GlobalSecondaryIndexes", [])
    if index not in [i.get("IndexName") for i in indexes]:
        return None
    return f"{table}/{index}"


def leading_keys(statement):
    """(patterns or None, problems) of the statement's LeadingKeys condition."""
    problems = []
    patterns = None
    for operator, keys in (statement.get("Condition") or {}).items():
        if not isinstance(keys, dict) or LEADING_KEYS not in keys:
            continue
        if operator != LEADING_KEYS_OPERATOR:
            problems.append(f"LeadingKeys under {operator!r}; use {LEADING_KEYS_OPERATOR!r}")
            continue
        values = as_list(keys[LEADING_KEYS])
        bad = [v for v in values if not (isinstance(v, str) and PREFIX_PATTERN.match(v))]
        if bad:
            problems.append(f"LeadingKeys {bad!r}: each must be a literal prefix followed by one '*'")
        patterns = {v for v in values if isinstance(v, str)}
    return patterns, problems


def check_dynamodb(template, name, function_statements):
    """Problems of one function's DynamoDB statements, against EXPECTED[name]."""
    problems = []
    granted = {}  # (target, action) -> set of patterns, ANY for unconditioned
    sids = set()
    for statement in function_statements:
        actions = [a for a in as_list(statement.get("Action", [])) if isinstance(a, str)]
        if not any(a.startswith("dynamodb:") for a in actions) and not any(
            isinstance(a, str) and a.startswith("dynamodb:")
            for a in as_list(statement.get("NotAction", []))
        ):
            continue
        sid = statement.get("Sid", "?")
        where = f"{name}/{sid}"
        if sid == "?" or sid in sids:
            problems.append(f"{where}: each DynamoDB statement needs a Sid unique in its function")
        sids.add(sid)
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{where}: NotAction/NotResource grant everything else; name them")
            continue
        if statement.get("Effect") != "Allow":
            continue  # a Deny only narrows
        patterns, condition_problems = leading_keys(statement)
        problems.extend(f"{where}: {p}" for p in condition_problems)
        targets = []
        for resource in as_list(statement.get("Resource", [])):
            target = table_target(template, resource)
            if target is None:
                problems.append(
                    f"{where}: resource {resource!r} is not one table (!GetAtt T.Arn) or one of "
                    'its indexes (!Sub "${T.Arn}/index/name")'
                )
                continue
            targets.append(target)
        if patterns is None:
            for target in targets:
                table = target.split("/")[0]
                if table not in UNCONDITIONED_TABLES:
                    problems.append(
                        f"{where}: {target} without a {LEADING_KEYS_OPERATOR} {LEADING_KEYS} condition"
                    )
        else:
            for action in actions:
                if action not in KEYED_ACTIONS:
                    problems.append(
                        f"{where}: {action} carries no leading keys, so the LeadingKeys "
                        "condition does not bind it"
                    )
        for target in targets:
            for action in actions:
                grant = granted.setdefault((target, action), set())
                grant |= {ANY} if patterns is None else patterns
    expected = EXPECTED.get(name)
    if expected is None:
        if granted:
            problems.append(f"{name}: DynamoDB access, but no entry in EXPECTED (check_policies.py)")
        return problems
    wanted = {
        (target, action): (ANY if prefixes == ANY else {p + "*" for p in prefixes})
        for target, actions in expected.items()
        for action, prefixes in actions.items()
    }
    for (target, action), grant in sorted(granted.items()):
        want = wanted.get((target, action))
        if want is None:
            problems.append(f"{name}: {action} on {target}, which its code never calls")
        elif want == ANY:
            if grant != {ANY}:
                problems.append(f"{name}: {action} on {target}: expected unconditioned, got {sorted(grant)}")
        elif ANY in grant:
            problems.append(f"{name}: {action} on {target} for any key; its code uses {sorted(want)}")
        elif grant - want:
            problems.append(
                f"{name}: {action} on {target} for {sorted(grant - want)}, wider than its code "
                f"uses ({sorted(want)})"
            )
    for (target, action), want in sorted(wanted.items(), key=lambda kv: kv[0]):
        grant = granted.get((target, action), set())
        missing = set() if ANY in grant else {ANY} if want == ANY else want - grant
        if missing:
            keys = "any key" if missing == {ANY} else sorted(missing)
            problems.append(f"{name}: its code calls {action} on {target} for {keys}, not granted")
    return problems


def check(template):
    problems = []
    functions = functions_of(template)
    if not functions:
        problems.append("no AWS::Serverless::Function in the template")
    for name in sorted(set(EXPECTED) - set(functions)):
        problems.append(f"{name}: in EXPECTED but not in the template")
    for name, function in functions.items():
        policies = function.get("Properties", {}).get("Policies", [])
        if not policies:
            problems.append(f"{name}: no Policies (SAM would fall back to a broad default)")
        function_statements = []
        for statement in statements(as_list(policies)):
            if "__template__" in statement:
                problems.append(
                    f"{name}: uses a policy template or managed policy {statement['__template__']!r}; "
                    "write the statements out"
                )
                continue
            function_statements.append(statement)
            sid = statement.get("Sid", "?")
            actions = [a for a in as_list(statement.get("Action", [])) if isinstance(a, str)]
            resources = as_list(statement.get("Resource", []))
            for action in actions:
                if "*" in action:
                    problems.append(f"{name}/{sid}: wildcard action {action!r}")
            if "*" in resources:
                broad = [a for a in actions if a not in NO_RESOURCE_LEVEL]
                if broad:
                    problems.append(
                        f"{name}/{sid}: Resource '*' for {broad}, which can be scoped to a resource"
                    )
                elif "Condition" not in statement:
                    problems.append(f"{name}/{sid}: Resource '*' without a Condition")
            if any(a.startswith("secretsmanager:") for a in actions):
                for resource in resources:
                    if not (isinstance(resource, dict) and set(resource) == {"Ref"}):
                        problems.append(
                            f"{name}/{sid}: Secrets Manager access must name a secret parameter, not {resource!r}"
                        )
        problems.extend(check_dynamodb(template, name, function_statements))
        problems.extend(check_bedrock(template, name, function_statements))
    return problems


def check_bedrock(template, name, function_statements):
    problems = []
    for statement in function_statements:
        sid = statement.get("Sid", "?")
        actions = [a for a in as_list(statement.get("Action", [])) if isinstance(a, str)]
        # IAM action names are case-insensitive.
        bedrock = [a for a in actions if a.lower().startswith("bedrock:")]
        if not bedrock:
            continue
        if name != BEDROCK_FUNCTION:
            problems.append(f"{name}/{sid}: only {BEDROCK_FUNCTION} calls Bedrock")
        allowed = {a.lower() for a in BEDROCK_ACTIONS}
        for action in sorted(a for a in bedrock if a.lower() not in allowed):
            problems.append(f"{name}/{sid}: {action} is more than Converse needs")
        if as_list(statement.get("Resource", [])) != [{"Ref": BEDROCK_PARAMETER}]:
            problems.append(
                f"{name}/{sid}: Bedrock access must name the {BEDROCK_PARAMETER} parameter's ARNs, "
                f"not {statement.get('Resource')!r}"
            )
    default = template.get("Parameters", {}).get(BEDROCK_PARAMETER, {}).get("Default", "")
    if name == BEDROCK_FUNCTION and "*" in str(default):
        problems.append(f"{BEDROCK_PARAMETER}: its default names a wildcard ({default!r})")
    return problems


def check_prefixes_in_code():
    code = "\n".join(path.read_text() for path in sorted(SOURCES.rglob("*.rs")))
    prefixes = {
        prefix
        for targets in EXPECTED.values()
        for actions in targets.values()
        for prefixes in actions.values()
        if prefixes != ANY
        for prefix in prefixes
    }
    return [
        f"EXPECTED names the key prefix {prefix!r}, which opens no string literal in {SOURCES}"
        for prefix in sorted(prefixes)
        if f'"{prefix}' not in code
    ]


def find_statement(template, function, sid):
    policies = template["Resources"][function]["Properties"]["Policies"]
    for statement in statements(as_list(policies)):
        if statement.get("Sid") == sid:
            return statement
    raise KeyError(f"{function}/{sid}")


def remove_statement(template, function, sid):
    for policy in template["Resources"][function]["Properties"]["Policies"]:
        listed = policy.get("Statement", [])
        kept = [s for s in listed if not (isinstance(s, dict) and s.get("Sid") == sid)]
        if len(kept) != len(listed):
            policy["Statement"] = kept
            return
    raise KeyError(f"{function}/{sid}")


def added(function, action, table_arn, keys=None):
    """A mutation adding one statement to the function's first policy."""
    statement = {"Sid": "Widened", "Effect": "Allow", "Action": [action], "Resource": table_arn}
    if keys is not None:
        statement["Condition"] = {LEADING_KEYS_OPERATOR: {LEADING_KEYS: keys}}

    def mutate(template):
        policies = template["Resources"][function]["Properties"]["Policies"]
        policies[0]["Statement"].append(copy.deepcopy(statement))

    return mutate


def keys_of(statement):
    return as_list(statement["Condition"][LEADING_KEYS_OPERATOR][LEADING_KEYS])


def set_keys(statement, values):
    statement["Condition"][LEADING_KEYS_OPERATOR][LEADING_KEYS] = values


def add_action(statement, action):
    statement["Action"] = as_list(statement["Action"]) + [action]


def any_value(statement):
    statement["Condition"] = {"ForAnyValue:StringLike": statement["Condition"][LEADING_KEYS_OPERATOR]}


def mutations(template):
    """(description, mutate) pairs; each mutate widens or narrows a template copy in place."""
    tenants = {"Fn::GetAtt": ["TenantsTable", "Arn"]}
    usage = {"Fn::GetAtt": ["UsageTable", "Arn"]}
    # The doors issue 12 found, as they would be reopened.
    found = [
        ("ingest may write keys, configs and prices",
         added("IngestFunction", "dynamodb:PutItem", tenants, ["KEY#*", "TENANT#*", "PRICE#*"])),
        ("ingest may write anywhere in the tenants table",
         added("IngestFunction", "dynamodb:PutItem", tenants)),
        # Issue 17: only the admin function writes tenant configurations and keys.
        ("invoke may update tenant configurations and keys",
         added("InvokeFunction", "dynamodb:UpdateItem", tenants, ["TENANT#*", "KEY#*"])),
        ("usage-report may issue keys",
         added("UsageReportFunction", "dynamodb:PutItem", tenants, ["KEY#*"])),
        ("invoke may set prices and upstream quotas",
         added("InvokeFunction", "dynamodb:PutItem", tenants, ["PRICE#*", "QUOTA#*"])),
        ("the admin function may write limiter counters",
         added("AdminFunction", "dynamodb:UpdateItem", {"Fn::GetAtt": ["LimitsTable", "Arn"]},
               ["t#*"])),
        ("the scheduler may rewrite the audit log",
         added("AnomalySchedulerFunction", "dynamodb:PutItem", tenants, ["AUDIT#*"])),
        ("usage-report may read stored conversation text",
         added("UsageReportFunction", "dynamodb:Query", usage, ["CONV#*"])),
        ("usage-report may query every index of the usage table",
         added("UsageReportFunction", "dynamodb:Query",
               {"Fn::Sub": "${UsageTable.Arn}/index/*"}, ["TENANT#*"])),
        ("a Scan under a LeadingKeys condition (ForAllValues over no keys is true)",
         added("UsageReportFunction", "dynamodb:Scan", usage, ["ROLLUP#*"])),
        ("invoke may call every Bedrock model",
         lambda t: find_statement(t, BEDROCK_FUNCTION, "BedrockModels").update(
             Resource="arn:aws:bedrock:*::foundation-model/*")),
        ("invoke may call Bedrock models by a pattern beside the listed ones",
         lambda t: find_statement(t, BEDROCK_FUNCTION, "BedrockModels").update(
             Resource=[{"Ref": BEDROCK_PARAMETER}, "arn:aws:bedrock:us-east-1::foundation-model/*"])),
        ("invoke may also manage Bedrock",
         lambda t: add_action(find_statement(t, BEDROCK_FUNCTION, "BedrockModels"),
                              "bedrock:CreateModelCustomizationJob")),
        ("ingest may call Bedrock",
         added("IngestFunction", "bedrock:InvokeModel", {"Ref": BEDROCK_PARAMETER})),
        ("ingest may call Bedrock, spelled in capitals",
         added("IngestFunction", "Bedrock:InvokeModel", {"Ref": BEDROCK_PARAMETER})),
        ("the model list defaults to every model",
         lambda t: t["Parameters"][BEDROCK_PARAMETER].update(
             Default="arn:aws:bedrock:*::foundation-model/*")),
    ]
    # Then every DynamoDB statement of every function, changed one way at a time.
    for function, resource in functions_of(template).items():
        policies = resource.get("Properties", {}).get("Policies", [])
        for statement in statements(as_list(policies)):
            actions = [a for a in as_list(statement.get("Action", [])) if isinstance(a, str)]
            if "__template__" in statement or not any(a.startswith("dynamodb:") for a in actions):
                continue
            sid = statement["Sid"]

            def edit(change, function=function, sid=sid):
                return lambda t: change(find_statement(t, function, sid))

            changes = [(f"plus {extra}", edit(lambda s, extra=extra: add_action(s, extra)))
                       for extra in sorted(KEYED_ACTIONS - set(actions))]
            changes.append(("removed", lambda t, function=function, sid=sid:
                            remove_statement(t, function, sid)))
            if "Condition" in statement:
                changes += [
                    ("one more prefix", edit(lambda s: set_keys(s, keys_of(s) + ["WIDENED#*"]))),
                    ("one prefix fewer", edit(lambda s: set_keys(s, keys_of(s)[1:] or ["NARROWED#*"]))),
                    ("any key", edit(lambda s: set_keys(s, ["*"]))),
                    ("no condition", edit(lambda s: s.pop("Condition"))),
                    ("ForAnyValue", edit(any_value)),
                    ("plus Scan", edit(lambda s: add_action(s, "dynamodb:Scan"))),
                ]
            found += [(f"{function}/{sid}: {what}", mutate) for what, mutate in changes]
    return found


def self_test(template):
    """Problems of the check itself: mutations of a passing template that it fails to refuse."""
    if check(template):
        return ["the template itself does not pass, so its mutations prove nothing"], 0
    missed = []
    cases = mutations(template)
    for description, mutate in cases:
        mutated = copy.deepcopy(template)
        mutate(mutated)
        if not check(mutated):
            missed.append(f"self-test: a template where {description} passes the check")
    return missed, len(cases)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    template, matches = decode(path)
    if matches:
        for match in matches:
            print(match)
        sys.exit(1)
    problems = check(template) + check_prefixes_in_code()
    for problem in problems:
        print(f"least privilege: {problem}")
    if problems:
        sys.exit(1)
    missed, cases = self_test(template)
    for problem in missed:
        print(f"least privilege: {problem}")
    if missed:
        sys.exit(1)
    print(f"least privilege: {path} ok ({cases} widened or narrowed copies refused)")


if __name__ == "__main__":
    main()
