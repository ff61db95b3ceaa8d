"""The burst stack's access documents in moto's AWS server: accepted as AWS accepts them, and acted under.

moto_server runs with IAM enforcement (`INITIAL_NO_AUTH_ACTION_COUNT`): after the three calls
that create an administrator, every request is authenticated and authorised against the caller's
IAM policies. The documents are the ones the SpotBurst component renders (gpufleet.plan.aws).

What moto cannot see: it authorises every request against the resource "*", so an Allow scoped
to an ARN never matches there (the node's own GetParameter is refused too), it knows few
condition keys, and it evaluates no key or queue policy. The exact ARNs, the kms:ViaService and
aws:SourceArn conditions are checked on the recorded graph (tests/components/test_burst_access.py)
and by the policy pack (tests/policies); here moto checks that AWS accepts each document, that the
SecureString is under the stack's own key and decrypts, and that the node's identity is refused
what AmazonSSMManagedInstanceCore, which it used to carry, allows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from gpufleet.plan.aws import (
    IMAGE_BUILDER_LOGS,
    builder_role_policy,
    controller_policy,
    kms_key_policy,
    node_role_policy,
    publisher_policy,
    queue_policy,
    weights_objects_arn,
)
from gpufleet.serving.tritonserver import free_port
from tests.integration.servers import serving

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
TOKEN = "/gpufleet/dc1/kubeadm/join-token"
CA_HASH = "/gpufleet/dc1/kubeadm/ca-cert-hash"
ADMIN_CALLS = 3  # create_user, put_user_policy, create_access_key
WEIGHTS = "/gpufleet/dc1/burst/weights"
BUCKET = "gpufleet-dc1-burst-0123456789"
PREFIX = "deepseek-ai/DeepSeek-R1-Distill-Llama-70B/0d6d11a6ea1187363aa7b78543f824fc02e06b14"
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    # AWS managed policies loaded: the control user carries the one the node role used to.
    enforced = [
        "env",
        f"INITIAL_NO_AUTH_ACTION_COUNT={ADMIN_CALLS}",
        "MOTO_IAM_LOAD_MANAGED_POLICIES=true",
        *moto,
    ]
    with serving(enforced, f"{url}/moto-api/", tmp_path_factory.mktemp("moto") / "moto.log"):
        yield url


def _client(service: str, url: str, creds: dict[str, str]) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
    )


@pytest.fixture(scope="module")
def admin(moto_url: str) -> dict[str, str]:
    iam = _client("iam", moto_url, {"AccessKeyId": "testing", "SecretAccessKey": "testing"})
    iam.create_user(UserName="admin")
    iam.put_user_policy(
        UserName="admin",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key: dict[str, str] = iam.create_access_key(UserName="admin")["AccessKey"]
    return key


@pytest.fixture(scope="module")
def stack(moto_url: str, admin: dict[str, str]) -> dict[str, Any]:
    """What `pulumi up` of the burst stack creates, with the component's documents, as the admin."""
    kms, ssm, sqs, iam = (_client(s, moto_url, admin) for s in ("kms", "ssm", "sqs", "iam"))
    key = kms.create_key(Policy=json.dumps(kms_key_policy(ACCOUNT, REGION)), Description="join token")
    key_arn = key["KeyMetadata"]["Arn"]
    ssm.put_parameter(Name=TOKEN, Type="SecureString", KeyId=key_arn, Value="abcdef.0123456789abcdef")
    ssm.put_parameter(Name=CA_HASH, Type="String", Value="sha256:" + "0" * 64)
    ssm.put_parameter(Name="/other/team/secret", Type="SecureString", Value="not-for-burst-nodes")
    parameters = {p["Name"]: p for p in ssm.describe_parameters()["Parameters"]}
    arn = {name: f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}" for name in (TOKEN, CA_HASH)}
    queue_url = sqs.create_queue(QueueName="burst-interruptions")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    rules = [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/burst-{e}" for e in ("spot", "rebalance", "asg")]
    sqs.set_queue_attributes(
        QueueUrl=queue_url, Attributes={"Policy": json.dumps(queue_policy(queue_arn, rules))}
    )
    asg_arn = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:0-1:autoScalingGroupName/burst-asg"
    ssm.put_parameter(Name=WEIGHTS, Type="String", Value=f"s3://{BUCKET}/{PREFIX}")
    weights_parameter = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{WEIGHTS}"
    objects = weights_objects_arn(BUCKET, PREFIX)
    node = node_role_policy([arn[TOKEN], arn[CA_HASH], weights_parameter], key_arn, REGION, objects)
    # As the stack does: a role with the inline policy; and a user with the same one to act as the node.
    iam.create_role(
        RoleName="burst-node-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    iam.put_role_policy(RoleName="burst-node-role", PolicyName="node", PolicyDocument=json.dumps(node))
    controller = iam.create_policy(
        PolicyName="burst-controller", PolicyDocument=json.dumps(controller_policy(queue_arn, asg_arn, 4))
    )["Policy"]
    # The image builder's instance role and the weights publisher's policy, as the stack writes them.
    component = f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:component/gpufleet-dc1-burst-0/1.0.0/1"
    builder = builder_role_policy(component, f"arn:aws:s3:::{BUCKET}/{IMAGE_BUILDER_LOGS}/*", REGION)
    iam.create_role(RoleName="burst-builder-role", AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    iam.put_role_policy(
        RoleName="burst-builder-role", PolicyName="builder", PolicyDocument=json.dumps(builder)
    )
    publisher = iam.create_policy(
        PolicyName="burst-weights-publisher", PolicyDocument=json.dumps(publisher_policy(objects))
    )["Policy"]
    iam.create_user(UserName="node")
    iam.put_user_policy(UserName="node", PolicyName="node", PolicyDocument=json.dumps(node))
    node_key = iam.create_access_key(UserName="node")["AccessKey"]
    # The control: what the node's identity was before (AWS's managed policy, as moto ships it).
    iam.create_user(UserName="managed")
    iam.attach_user_policy(
        UserName="managed", PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    )
    managed_key = iam.create_access_key(UserName="managed")["AccessKey"]
    return {
        "key_arn": key_arn,
        "parameters": parameters,
        "queue_url": queue_url,
        "queue_arn": queue_arn,
        "rules": rules,
        "node": node,
        "node_key": node_key,
        "managed_key": managed_key,
        "controller": controller,
        "builder": builder,
        "publisher": publisher,
        "objects": objects,
    }


def test_aws_keeps_each_document_as_the_component_wrote_it(
    moto_url: str, admin: dict[str, str], stack: dict[str, Any]
) -> None:
    kms, sqs, iam = (_client(s, moto_url, admin) for s in ("kms", "sqs", "iam"))
    stored = kms.get_key_policy(KeyId=stack["key_arn"], PolicyName="default")["Policy"]
    assert json.loads(stored) == kms_key_policy(ACCOUNT, REGION)
    policy = sqs.get_queue_attributes(QueueUrl=stack["queue_url"], AttributeNames=["Policy"])["Attributes"]
    assert json.loads(policy["Policy"]) == queue_policy(stack["queue_arn"], stack["rules"])
    inline = iam.get_role_policy(RoleName="burst-node-role", PolicyName="node")["PolicyDocument"]
    assert inline == stack["node"]
    built = iam.get_role_policy(RoleName="burst-builder-role", PolicyName="builder")["PolicyDocument"]
    assert built == stack["builder"]
    version = iam.get_policy_version(PolicyArn=stack["publisher"]["Arn"], VersionId="v1")["PolicyVersion"]
    assert version["Document"] == publisher_policy(stack["objects"])
    assert iam.list_attached_role_policies(RoleName="burst-node-role")["AttachedPolicies"] == []


def test_the_join_token_is_a_securestring_under_the_stacks_key(
    moto_url: str, admin: dict[str, str], stack: dict[str, Any]
) -> None:
    token = stack["parameters"][TOKEN]
    assert token["Type"] == "SecureString"
    assert token["KeyId"] == stack["key_arn"]
    assert stack["parameters"]["/other/team/secret"]["KeyId"] == "alias/aws/ssm"
    ssm = _client("ssm", moto_url, admin)
    assert ssm.get_parameter(Name=TOKEN)["Parameter"]["Value"] != "abcdef.0123456789abcdef"
    assert (
        ssm.get_parameter(Name=TOKEN, WithDecryption=True)["Parameter"]["Value"] == "abcdef.0123456789abcdef"
    )


def test_a_policy_document_aws_would_refuse_is_refused(moto_url: str, admin: dict[str, str]) -> None:
    iam = _client("iam", moto_url, admin)
    broken = node_role_policy(
        ["arn:aws:ssm:us-east-1:1:parameter/x"], "arn:aws:kms:us-east-1:1:key/k", REGION, "arn:aws:s3:::b/p/*"
    )
    broken["Statement"][0]["Effect"] = "Permit"
    with pytest.raises(ClientError, match="MalformedPolicyDocument"):
        iam.put_role_policy(
            RoleName="burst-node-role", PolicyName="broken", PolicyDocument=json.dumps(broken)
        )


def test_the_node_is_refused_what_the_managed_policy_allowed(moto_url: str, stack: dict[str, Any]) -> None:
    def calls(creds: dict[str, str]) -> list[Any]:
        ssm, sqs, asg, kms, iam = (
            _client(s, moto_url, creds) for s in ("ssm", "sqs", "autoscaling", "kms", "iam")
        )
        return [
            lambda: ssm.get_parameters_by_path(Path="/", Recursive=True, WithDecryption=True),
            lambda: ssm.get_parameter(Name="/other/team/secret", WithDecryption=True),
            lambda: ssm.get_parameters(Names=["/other/team/secret"]),
            lambda: sqs.send_message(QueueUrl=stack["queue_url"], MessageBody="{}"),
            lambda: sqs.receive_message(QueueUrl=stack["queue_url"]),
            lambda: asg.complete_lifecycle_action(
                AutoScalingGroupName="burst-asg", LifecycleHookName="drain", LifecycleActionResult="CONTINUE"
            ),
            lambda: kms.encrypt(KeyId=stack["key_arn"], Plaintext=b"x"),
            lambda: iam.list_users(),
        ]

    # The control first: the managed policy reads any parameter in the account, secrets included.
    managed = calls(stack["managed_key"])
    assert managed[1]()["Parameter"]["Value"] == "not-for-burst-nodes"
    assert managed[2]()["Parameters"][0]["Name"] == "/other/team/secret"
    for call in calls(stack["node_key"]):
        with pytest.raises(ClientError) as exc:
            call()
        # moto answers JSON-protocol services with an XML body that botocore reads as code "403".
        assert "user/node is not authorized to perform" in str(exc.value), exc.value
