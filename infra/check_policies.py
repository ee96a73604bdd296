"""Least-privilege check for template.yaml (run by infra/test.sh after cfn-lint and sam validate).

Fails when a function's policy
- uses a SAM policy template or a managed policy (they grant more than Tollgate uses),
- names an action with a wildcard (`dynamodb:*`, `*`),
- grants `Resource: "*"` for an action that supports resource-level permissions (only the
  actions in NO_RESOURCE_LEVEL may use `*`, and only with a Condition narrowing them),
- or grants Secrets Manager access to anything but a named secret parameter.

Usage: python infra/check_policies.py template.yaml
"""

import sys

from cfnlint.decode import decode

# Actions IAM cannot scope to a resource (per the service authorization reference); each must
# carry a Condition instead.
NO_RESOURCE_LEVEL = {"cloudwatch:PutMetricData"}


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


def check(template):
    problems = []
    functions = {
        name: resource
        for name, resource in template["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }
    if not functions:
        problems.append("no AWS::Serverless::Function in the template")
    for name, function in functions.items():
        policies = function.get("Properties", {}).get("Policies", [])
        if not policies:
            problems.append(f"{name}: no Policies (SAM would fall back to a broad default)")
        for statement in statements(as_list(policies)):
            if "__template__" in statement:
                problems.append(
                    f"{name}: uses a policy template or managed policy {statement['__template__']!r}; "
                    "write the statements out"
                )
                continue
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
    return problems


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    template, matches = decode(path)
    if matches:
        for match in matches:
            print(match)
        sys.exit(1)
    problems = check(template)
    for problem in problems:
        print(f"least privilege: {problem}")
    if problems:
        sys.exit(1)
    print(f"least privilege: {path} ok")


if __name__ == "__main__":
    main()
