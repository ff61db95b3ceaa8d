"""Who may do what in the burst stack, read from its recorded graph under mocks.

The mocks give every AWS resource the ARN `arn:aws:<service>:us-east-1:<ACCOUNT>:<name>`, so each
policy can be checked against the exact ARNs of the resources it names. What the mocks cannot see:
whether AWS accepts these documents and honours them; tests/integration/test_burst_aws_access.py
puts the same documents into moto's IAM, KMS, SSM and SQS and acts under them.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from gpufleet.inventory.stacks import Stack
from gpufleet.plan.aws import (
    CONTROLLER_UP_ACTION,
    IMAGE_BUILDER_LOGS,
    SESSION_MANAGER_ACTIONS,
    STAR_RESOURCE_ACTIONS,
    builder_role_policy,
    controller_policy,
    kms_key_policy,
    node_role_policy,
    plan_burst,
    publisher_policy,
    queue_policy,
)
from gpufleet.plan.k8s import GPU_MODEL_LABEL
from gpufleet.preview.program import (
    ACCOUNT,
    ORGANIZATION,
    PROGRAM,
    PROJECT,
    Graph,
    Registration,
    evaluate,
    evaluate_stack,
    reveal,
    stack_config,
)

STACK = "burst-prod"


def arn(r: Registration) -> str:
    return f"arn:aws:{r.type.split(':')[1].split('/')[0]}:us-east-1:{ACCOUNT}:{r.name}"


def named(graph: Graph, type_: str, suffix: str) -> Registration:
    found = [r for r in graph.by_type(type_) if r.name.endswith(suffix)]
    assert len(found) == 1, (type_, suffix, [r.name for r in graph.by_type(type_)])
    return found[0]


def one_bucket(graph: Graph) -> str:
    """The weights bucket's name as AWS assigns it (its prefix and a suffix), read back from the
    parameter the nodes read it from."""
    (bucket,) = graph.by_type("aws:s3/bucket:Bucket")
    value: str = reveal(named(graph, "aws:ssm/parameter:Parameter", "-weights").inputs["value"])
    name = value.removeprefix("s3://").split("/", 1)[0]
    assert name.startswith(bucket.inputs["bucketPrefix"]) and name != bucket.inputs["bucketPrefix"]
    return name


def document(r: Registration) -> dict[str, Any]:
    return json.loads(r.inputs["policy"])


def test_the_node_role_reads_its_parameters_and_weights_decrypts_through_ssm_and_nothing_else(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    graph, stack = graphs[STACK], stacks[STACK]
    region = plan_burst(stack.inventory, stack.config, "f").region
    assert graph.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") == [], "no managed policy"
    token = named(graph, "aws:ssm/parameter:Parameter", "-join-token")
    ca = named(graph, "aws:ssm/parameter:Parameter", "-ca-cert-hash")
    weights = named(graph, "aws:ssm/parameter:Parameter", "-weights")
    key = named(graph, "aws:kms/key:Key", "-join-token-key")
    bucket = one_bucket(graph)
    p = plan_burst(stack.inventory, stack.config, "f")
    policy = document(named(graph, "aws:iam/rolePolicy:RolePolicy", "-node-policy"))
    prefix = f"arn:aws:s3:::{bucket}/{p.weights_prefix}/*"
    assert policy == node_role_policy([arn(token), arn(ca), arn(weights)], arn(key), region, prefix)
    # The burst model's one revision: read its objects, list nothing, write nothing.
    (objects,) = [s for s in policy["Statement"] if s["Action"][0].startswith("s3:")]
    assert objects["Action"] == ["s3:GetObject"] and objects["Resource"] == [prefix]
    assert p.weights_prefix == f"{p.fleet.hf_repo}/{p.fleet.revision}"
    assert (
        reveal(weights.inputs["value"]) == f"s3://{bucket}/{p.weights_prefix}"
        and weights.inputs["type"] == "String"
    )
    actions = [a for s in policy["Statement"] for a in s["Action"]]
    assert not [a for a in actions if a.split(":")[0] in ("sqs", "autoscaling", "ec2", "iam", "sts")]
    assert "ssm:GetParameters" not in actions and "ssm:GetParametersByPath" not in actions
    for s in policy["Statement"]:
        if s["Resource"] == "*":
            assert set(s["Action"]) == set(SESSION_MANAGER_ACTIONS) <= STAR_RESOURCE_ACTIONS
    (decrypt,) = [s for s in policy["Statement"] if s["Action"] == ["kms:Decrypt"]]
    assert decrypt["Condition"] == {"StringEquals": {"kms:ViaService": f"ssm.{region}.amazonaws.com"}}


def test_the_join_token_is_encrypted_with_the_stacks_own_key(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    graph, stack = graphs[STACK], stacks[STACK]
    region = plan_burst(stack.inventory, stack.config, "f").region
    key = named(graph, "aws:kms/key:Key", "-join-token-key")
    token = named(graph, "aws:ssm/parameter:Parameter", "-join-token")
    assert token.inputs["type"] == "SecureString" and token.inputs["keyId"] == arn(key)
    assert key.inputs["enableKeyRotation"] is True
    assert document(key) == kms_key_policy(ACCOUNT, region)
    for s in document(key)["Statement"]:
        assert s["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
        assert not [a for a in s["Action"] if a.endswith("*")]
        if {"kms:Decrypt", "kms:Encrypt"} & set(s["Action"]):
            assert s["Condition"]["StringEquals"]["kms:ViaService"] == f"ssm.{region}.amazonaws.com"


def test_burst_nodes_keep_instance_metadata_from_pods(graphs: dict[str, Graph]) -> None:
    lt = graphs[STACK].by_type("aws:ec2/launchTemplate:LaunchTemplate")[0].inputs
    assert lt["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 1,
    }
    # Nothing in the cluster relies on a pod reaching IMDS: no termination handler on the nodes.
    assert not [r for r in graphs[STACK].by_type("kubernetes:helm.sh/v3:Release") if "termination" in r.name]


def test_only_the_interruption_rules_of_this_account_may_send_to_the_queue(graphs: dict[str, Graph]) -> None:
    graph = graphs[STACK]
    queue = graph.by_type("aws:sqs/queue:Queue")[0]
    rules = graph.by_type("aws:cloudwatch/eventRule:EventRule")
    policy = document(graph.by_type("aws:sqs/queuePolicy:QueuePolicy")[0])
    assert policy == queue_policy(arn(queue), [arn(r) for r in rules])
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert sorted(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == sorted(arn(r) for r in rules)
    assert len(rules) == 3
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}


def test_the_controller_policy_names_this_queue_and_this_group(graphs: dict[str, Graph]) -> None:
    graph = graphs[STACK]
    queue = graph.by_type("aws:sqs/queue:Queue")[0]
    asg = graph.by_type("aws:autoscaling/group:Group")[0]
    controller = named(graph, "aws:iam/policy:Policy", "-controller")
    policy = document(controller)
    assert policy == controller_policy(arn(queue), arn(asg), asg.inputs["maxSize"])
    group = next(s for s in policy["Statement"] if "autoscaling:CompleteLifecycleAction" in s["Action"])
    assert group["Resource"] == [arn(asg)]
    for s in policy["Statement"]:
        if s["Resource"] == "*":
            assert set(s["Action"]) <= STAR_RESOURCE_ACTIONS
    assert graph.outputs["controllerPolicyArn"] == arn(controller)


def test_the_controllers_up_of_a_new_burst_node_count_changes_only_what_its_policy_grants(
    graphs: dict[str, Graph],
) -> None:
    """`gpufleet burst run`'s default path: `pulumi up` with only `gpufleet:burstNodes` changed.

    Run the program again with another count: if any AWS resource but the group's desiredCapacity
    changed, the controller's `up` would call an action its policy lacks, and this fails. The mocks
    cannot see which calls the AWS provider makes for that one update; that it is
    UpdateAutoScalingGroup then DescribeAutoScalingGroups is read from the provider, not recorded.
    """
    base = graphs[STACK]
    cfg = stack_config(STACK, PROGRAM.parent)
    onprem = cfg["gpufleet:onpremStack"]
    name = onprem if onprem.count("/") == 2 else f"{ORGANIZATION}/{PROJECT}/{onprem}"
    asg = base.by_type("aws:autoscaling/group:Group")[0]
    count = asg.inputs["maxSize"]
    assert count != cfg["gpufleet:burstNodes"]
    more = evaluate(
        STACK,
        config={**cfg, "gpufleet:burstNodes": count},
        references={name: evaluate_stack(name.rsplit("/", 1)[-1]).outputs},
    )
    before = {(r.type, r.name): r.inputs for r in base.resources}
    after = {(r.type, r.name): r.inputs for r in more.resources}
    assert before.keys() == after.keys(), "a new burst node count adds or removes no resource"
    changed = {
        (key, field)
        for key, inputs in after.items()
        for field in inputs.keys() | before[key].keys()
        if inputs.get(field) != before[key].get(field)
    }
    # In AWS the group's desired capacity alone; in the on-prem cluster (through the stack's
    # kubeconfig, not IAM) the replicas of each GPU class's burst serving Deployment alone.
    serving = [d for d in base.by_type("kubernetes:apps/v1:Deployment") if "-burst-" in d.name]
    classes = {d.inputs["spec"]["template"]["spec"]["nodeSelector"][GPU_MODEL_LABEL] for d in serving}
    assert len(serving) == len(classes) > 1
    assert changed == {((asg.type, asg.name), "desiredCapacity")} | {
        ((d.type, d.name), "spec") for d in serving
    }
    for d in serving:
        spec, spec_after = d.inputs["spec"], after[(d.type, d.name)]["spec"]
        assert {k for k in spec.keys() | spec_after.keys() if spec.get(k) != spec_after.get(k)} == {
            "replicas"
        }
    policy = document(named(base, "aws:iam/policy:Policy", "-controller"))
    (up,) = [s for s in policy["Statement"] if CONTROLLER_UP_ACTION in s["Action"]]
    assert up["Action"] == [CONTROLLER_UP_ACTION] and up["Resource"] == [arn(asg)]
    assert up["Condition"] == {"NumericLessThanEqualsIfExists": {"autoscaling:MaxSize": str(count)}}
    assert "autoscaling:DescribeAutoScalingGroups" in STAR_RESOURCE_ACTIONS


def test_the_controller_policy_scopes_each_action_as_aws_authorises_it(graphs: dict[str, Graph]) -> None:
    """AWS's service authorization data (as cfn-lint carries it): an action granted on an ARN takes
    that resource type, so the grant is not silently void; one granted on "*" takes none."""
    spec = json.loads(resources.files("cfnlint").joinpath("data/AdditionalSpecs/Policies.json").read_text())
    policy = document(named(graphs[STACK], "aws:iam/policy:Policy", "-controller"))
    for statement in policy["Statement"]:
        for action in statement["Action"]:
            service, name = action.split(":")
            takes = spec[service]["Actions"][name.lower()].get("Resources", [])
            if statement["Resource"] == "*":
                assert takes == [], action
            else:
                kind = statement["Resource"][0].split(":")[2]
                assert takes == [{"autoscaling": "autoScalingGroup", "sqs": "queue"}[kind]], action


def test_the_image_builder_reads_its_component_and_writes_its_logs_only(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    graph, stack = graphs[STACK], stacks[STACK]
    region = plan_burst(stack.inventory, stack.config, "f").region
    bucket = one_bucket(graph)
    component = named(graph, "aws:imagebuilder/component:Component", "-node-component")
    policy = document(named(graph, "aws:iam/rolePolicy:RolePolicy", "-builder-policy"))
    logs = f"arn:aws:s3:::{bucket}/{IMAGE_BUILDER_LOGS}/*"
    assert policy == builder_role_policy(arn(component), logs, region)
    for s in policy["Statement"]:
        if s["Resource"] == "*":
            assert set(s["Action"]) <= STAR_RESOURCE_ACTIONS
        else:
            assert len(s["Resource"]) == 1 and not s["Resource"][0].endswith(":*")
    writes = [s for s in policy["Statement"] if "s3:PutObject" in s["Action"]]
    assert [s["Resource"] for s in writes] == [[logs]]
    # The build instance logs there, runs in a private subnet with no inbound rule, IMDSv2 only.
    infra = named(
        graph, "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration", "-builder"
    )
    assert infra.inputs["logging"]["s3Logs"] == {"s3BucketName": bucket, "s3KeyPrefix": IMAGE_BUILDER_LOGS}
    assert infra.inputs["instanceMetadataOptions"] == {"httpTokens": "required", "httpPutResponseHopLimit": 1}
    assert infra.inputs["terminateInstanceOnFailure"] is True
    sg = named(graph, "aws:ec2/securityGroup:SecurityGroup", "-builder")
    assert sg.inputs["ingress"] == [] and len(infra.inputs["securityGroupIds"]) == 1
    assert sg.urn in infra.dependencies
    profile = named(graph, "aws:iam/instanceProfile:InstanceProfile", "-builder-profile")
    role = named(graph, "aws:iam/role:Role", "-builder-role")
    assert infra.inputs["instanceProfileName"] == profile.name and role.urn in profile.dependencies


def test_the_publisher_writes_the_one_revision_prefix(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    graph, stack = graphs[STACK], stacks[STACK]
    p = plan_burst(stack.inventory, stack.config, "f")
    publisher = document(named(graph, "aws:iam/policy:Policy", "-weights-publisher"))
    prefix = f"arn:aws:s3:::{one_bucket(graph)}/{p.weights_prefix}/*"
    assert publisher == publisher_policy(prefix)
    assert graph.outputs["weightsUrl"] == f"s3://{one_bucket(graph)}/{p.weights_prefix}"
