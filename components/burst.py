"""SpotBurst: the AWS side of burst capacity — network, VPN, node identity, launch template, Spot ASG."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from gpufleet.plan.aws import (
    ADMIN_PORTS,
    BUILDER_INSTANCE_TYPE,
    CNI_PORTS,
    DNS_PORT,
    IMAGE_BUILDER_LOGS,
    IMAGE_ROOT_GIB,
    NODE_SCRIPT_FILES,
    TRITON_PORTS,
    AwsBurstPlan,
    account_of,
    builder_role_policy,
    controller_policy,
    image_component,
    image_name,
    kms_key_policy,
    node_role_policy,
    publisher_policy,
    queue_policy,
    weights_objects_arn,
)
from gpufleet.serving import burst_weights

# The node scripts the baked image carries, from this checkout (model_cache.py beside burst_weights.py).
NODE_SCRIPTS_DIR = Path(burst_weights.__file__).parent
EC2_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)

INTERRUPTION_EVENTS = {
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "asg-terminate": {
        "source": ["aws.autoscaling"],
        "detail-type": ["EC2 Instance-terminate Lifecycle Action"],
    },
}


@dataclass(frozen=True)
class SpotBurstArgs:
    plan: AwsBurstPlan
    join_token: pulumi.Input[str]  # a Pulumi secret, stored as an SSM SecureString
    ca_cert_hash: pulumi.Input[str]


class SpotBurst(pulumi.ComponentResource):
    queue_url: pulumi.Output[str]
    asg_name: pulumi.Output[str]
    controller_policy_arn: pulumi.Output[str]
    weights_url: pulumi.Output[str]
    image_id: pulumi.Output[str]
    publisher_policy_arn: pulumi.Output[str]

    def __init__(self, name: str, args: SpotBurstArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpufleet:burst:SpotBurst", name, None, opts)
        p = args.plan
        tags = p.tags
        # The region comes from the site's burst plan, not from `aws:region` stack config.
        provider = aws.Provider(f"{name}-aws", region=p.region, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=provider)

        def tagged(suffix: str) -> dict[str, str]:
            return {**tags, "Name": f"{name}-{suffix}"}

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=p.network.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tagged("vpc"),
            opts=child,
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tagged("igw"), opts=child)
        public = aws.ec2.Subnet(
            f"{name}-public",
            vpc_id=vpc.id,
            cidr_block=p.network.public.cidr,
            availability_zone=p.network.public.az,
            map_public_ip_on_launch=False,
            tags=tagged("public"),
            opts=child,
        )
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=tagged("public-rt"),
            opts=child,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-public-rta", subnet_id=public.id, route_table_id=public_rt.id, opts=child
        )
        eip = aws.ec2.Eip(f"{name}-nat-eip", domain="vpc", tags=tagged("nat-eip"), opts=child)
        nat = aws.ec2.NatGateway(
            f"{name}-nat", allocation_id=eip.id, subnet_id=public.id, tags=tagged("nat"), opts=child
        )

        # Site-to-site VPN: burst nodes reach the API server and Ceph, on-prem reaches the kubelets.
        vgw = aws.ec2.VpnGateway(f"{name}-vgw", vpc_id=vpc.id, tags=tagged("vgw"), opts=child)
        cgw = aws.ec2.CustomerGateway(
            f"{name}-cgw",
            bgp_asn=str(p.vpn_asn),
            ip_address=p.vpn_gateway,
            type="ipsec.1",
            tags=tagged("cgw"),
            opts=child,
        )
        vpn = aws.ec2.VpnConnection(
            f"{name}-vpn",
            vpn_gateway_id=vgw.id,
            customer_gateway_id=cgw.id,
            type="ipsec.1",
            static_routes_only=True,
            tags=tagged("vpn"),
            opts=child,
        )
        for i, cidr in enumerate(p.network.onprem_cidrs):
            aws.ec2.VpnConnectionRoute(
                f"{name}-vpn-route-{i}", vpn_connection_id=vpn.id, destination_cidr_block=cidr, opts=child
            )
        private_rt = aws.ec2.RouteTable(
            f"{name}-private-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
            tags=tagged("private-rt"),
            opts=child,
        )
        aws.ec2.VpnGatewayRoutePropagation(
            f"{name}-vgw-propagation", vpn_gateway_id=vgw.id, route_table_id=private_rt.id, opts=child
        )
        private = []
        for subnet in p.network.private:
            s = aws.ec2.Subnet(
                f"{name}-private-{subnet.az}",
                vpc_id=vpc.id,
                cidr_block=subnet.cidr,
                availability_zone=subnet.az,
                tags=tagged(f"private-{subnet.az}"),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-rta-{subnet.az}", subnet_id=s.id, route_table_id=private_rt.id, opts=child
            )
            private.append(s)

        # Least privilege: admin ports and Triton only from the on-prem networks over the VPN.
        onprem = p.network.onprem_cidrs
        sg = aws.ec2.SecurityGroup(
            f"{name}-nodes",
            vpc_id=vpc.id,
            description="Spot GPU burst nodes",
            ingress=[
                *(
                    aws.ec2.SecurityGroupIngressArgs(
                        protocol="tcp",
                        from_port=port,
                        to_port=port,
                        cidr_blocks=[p.network.admin_cidr],
                        description=f"admin {port} from on-prem management",
                    )
                    for port in ADMIN_PORTS
                ),
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=TRITON_PORTS[0],
                    to_port=TRITON_PORTS[1],
                    cidr_blocks=onprem,
                    description="Triton from on-prem and pods",
                ),
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="-1", from_port=0, to_port=0, self=True, description="node to node"
                ),
                # The pod network: on-prem nodes are the burst nodes' VXLAN and BGP peers.
                *(
                    aws.ec2.SecurityGroupIngressArgs(
                        protocol=protocol,
                        from_port=port,
                        to_port=port,
                        cidr_blocks=[p.network.node_cidr],
                        description=f"{what} from on-prem nodes",
                    )
                    for protocol, port, what in CNI_PORTS
                ),
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="-1", from_port=0, to_port=0, cidr_blocks=["0.0.0.0/0"], description="egress"
                )
            ],
            tags=tagged("nodes"),
            opts=child,
        )

        if p.resolver is not None:
            # The control-plane name lives in the site's DNS: forward it there over the VPN.
            targets = [f"{ip}/32" for ip in p.resolver.target_ips]
            resolver_sg = aws.ec2.SecurityGroup(
                f"{name}-resolver",
                vpc_id=vpc.id,
                description="Route 53 Resolver outbound: DNS to the site's servers only",
                ingress=[],
                egress=[
                    aws.ec2.SecurityGroupEgressArgs(
                        protocol=protocol,
                        from_port=DNS_PORT,
                        to_port=DNS_PORT,
                        cidr_blocks=targets,
                        description=f"DNS over {protocol} to the site",
                    )
                    for protocol in ("udp", "tcp")
                ],
                tags=tagged("resolver"),
                opts=child,
            )
            endpoint = aws.route53.ResolverEndpoint(
                f"{name}-resolver",
                direction="OUTBOUND",
                security_group_ids=[resolver_sg.id],
                # Two addresses in two AZs, as Route 53 Resolver requires.
                ip_addresses=[aws.route53.ResolverEndpointIpAddressArgs(subnet_id=s.id) for s in private[:2]],
                tags=tagged("resolver"),
                opts=child,
            )
            rule = aws.route53.ResolverRule(
                f"{name}-control-plane",
                domain_name=p.resolver.domain,
                rule_type="FORWARD",
                resolver_endpoint_id=endpoint.id,
                target_ips=[
                    aws.route53.ResolverRuleTargetIpArgs(ip=ip, port=DNS_PORT) for ip in p.resolver.target_ips
                ],
                tags=tagged("control-plane"),
                opts=child,
            )
            aws.route53.ResolverRuleAssociation(
                f"{name}-control-plane", resolver_rule_id=rule.id, vpc_id=vpc.id, opts=child
            )

        # The burst model's pinned revision (published once, burst_weights.py) and the image
        # builds' logs: private, encrypted at rest.
        weights = aws.s3.Bucket(
            f"{name}-weights", bucket_prefix=f"gpufleet-{p.site}-burst-", tags=tags, opts=child
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-weights",
            bucket=weights.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-weights",
            bucket=weights.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    )
                )
            ],
            opts=child,
        )
        weights_url = weights.bucket.apply(lambda b: f"s3://{b}/{p.weights_prefix}")
        weights_parameter = aws.ssm.Parameter(
            f"{name}-weights",
            name=p.weights_parameter,
            type="String",
            value=weights_url,
            tags=tags,
            opts=child,
        )
        weights_arn = weights.bucket.apply(lambda b: weights_objects_arn(b, p.weights_prefix))

        role = aws.iam.Role(f"{name}-node-role", assume_role_policy=EC2_TRUST, tags=tags, opts=child)
        # The join token's own key: usable only through SSM (the key policy and the node role say so).
        key = aws.kms.Key(
            f"{name}-join-token-key",
            description=f"gpufleet {p.site}: kubeadm join token (SSM SecureString)",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            policy=role.arn.apply(lambda arn: json.dumps(kms_key_policy(account_of(arn), p.region))),
            tags=tags,
            opts=child,
        )
        # The join token: a Pulumi secret in state, an SSM SecureString in AWS, never in user data.
        token = aws.ssm.Parameter(
            f"{name}-join-token",
            name=p.join_token_parameter,
            type="SecureString",
            key_id=key.arn,
            value=pulumi.Output.secret(args.join_token),
            tags=tags,
            opts=child,
        )
        ca_hash = aws.ssm.Parameter(
            f"{name}-ca-cert-hash",
            name=p.ca_hash_parameter,
            type="String",
            value=args.ca_cert_hash,
            tags=tags,
            opts=child,
        )

        queue = aws.sqs.Queue(
            f"{name}-interruptions",
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-node-policy",
            role=role.id,
            policy=pulumi.Output.all(
                token.arn, ca_hash.arn, weights_parameter.arn, key.arn, weights_arn
            ).apply(lambda arns: json.dumps(node_role_policy(list(arns[:3]), arns[3], p.region, arns[4]))),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(f"{name}-node-profile", role=role.name, tags=tags, opts=child)

        # The baked burst image (docs/burst-boot.md): Image Builder builds it from the BOM's AMI
        # during `pulumi up` whenever the component or the parent changes (a new name, so a new
        # image), and the launch template takes the AMI it distributes.
        builder_role = aws.iam.Role(
            f"{name}-builder-role", assume_role_policy=EC2_TRUST, tags=tags, opts=child
        )
        builder_profile = aws.iam.InstanceProfile(
            f"{name}-builder-profile", role=builder_role.name, tags=tags, opts=child
        )
        builder_sg = aws.ec2.SecurityGroup(
            f"{name}-builder",
            vpc_id=vpc.id,
            description="Image Builder build instance: no inbound, packages and images out",
            ingress=[],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="-1", from_port=0, to_port=0, cidr_blocks=["0.0.0.0/0"], description="egress"
                )
            ],
            tags=tagged("builder"),
            opts=child,
        )
        scripts = {file: (NODE_SCRIPTS_DIR / file).read_text() for file in NODE_SCRIPT_FILES}
        document = image_component(p, scripts)
        image = image_name(document, p)
        component = aws.imagebuilder.Component(
            f"{name}-node-component",
            name=image,
            version="1.0.0",
            platform="Linux",
            data=document,
            description=f"gpufleet {p.site}: burst node packages, serving image, node scripts",
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-builder-policy",
            role=builder_role.id,
            policy=pulumi.Output.all(component.arn, weights.bucket).apply(
                lambda a: json.dumps(
                    builder_role_policy(a[0], f"arn:aws:s3:::{a[1]}/{IMAGE_BUILDER_LOGS}/*", p.region)
                )
            ),
            opts=child,
        )
        recipe = aws.imagebuilder.ImageRecipe(
            f"{name}-node-recipe",
            name=image,
            version="1.0.0",
            # Image Builder resolves the parent from the public SSM parameter the BOM pins.
            parent_image=f"ssm:{p.ami_parameter}",
            components=[aws.imagebuilder.ImageRecipeComponentArgs(component_arn=component.arn)],
            block_device_mappings=[
                aws.imagebuilder.ImageRecipeBlockDeviceMappingArgs(
                    device_name="/dev/sda1",
                    ebs=aws.imagebuilder.ImageRecipeBlockDeviceMappingEbsArgs(
                        volume_size=IMAGE_ROOT_GIB,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            tags=tags,
            opts=child,
        )
        infrastructure = aws.imagebuilder.InfrastructureConfiguration(
            f"{name}-builder",
            name=f"gpufleet-{p.site}-burst-builder",
            instance_profile_name=builder_profile.name,
            instance_types=[BUILDER_INSTANCE_TYPE],
            subnet_id=private[0].id,
            security_group_ids=[builder_sg.id],
            terminate_instance_on_failure=True,
            instance_metadata_options=aws.imagebuilder.InfrastructureConfigurationInstanceMetadataOptionsArgs(
                http_tokens="required", http_put_response_hop_limit=1
            ),
            logging=aws.imagebuilder.InfrastructureConfigurationLoggingArgs(
                s3_logs=aws.imagebuilder.InfrastructureConfigurationLoggingS3LogsArgs(
                    s3_bucket_name=weights.bucket, s3_key_prefix=IMAGE_BUILDER_LOGS
                )
            ),
            tags=tags,
            opts=child,
        )
        distribution = aws.imagebuilder.DistributionConfiguration(
            f"{name}-node-image",
            name=f"gpufleet-{p.site}-burst",
            distributions=[
                aws.imagebuilder.DistributionConfigurationDistributionArgs(
                    region=p.region,
                    ami_distribution_configuration=aws.imagebuilder.DistributionConfigurationDistributionAmiDistributionConfigurationArgs(
                        name=f"{image}-{{{{ imagebuilder:buildDate }}}}", ami_tags=tagged("node-image")
                    ),
                )
            ],
            tags=tags,
            opts=child,
        )
        built = aws.imagebuilder.Image(
            f"{name}-node-image",
            image_recipe_arn=recipe.arn,
            infrastructure_configuration_arn=infrastructure.arn,
            distribution_configuration_arn=distribution.arn,
            image_tests_configuration=aws.imagebuilder.ImageImageTestsConfigurationArgs(
                image_tests_enabled=True, timeout_minutes=60
            ),
            tags=tags,
            # A build pulls the serving image (tens of GiB) and snapshots the volume.
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create="120m"))
            ),
        )
        image_id = built.output_resources.apply(lambda out: out[0].amis[0].image)

        template = aws.ec2.LaunchTemplate(
            f"{name}-nodes",
            # The baked image: the BOM's AMI with the node packages and the serving image in it.
            image_id=image_id,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=profile.arn),
            vpc_security_group_ids=[sg.id],
            # IMDSv2 only, hop limit 1: a pod behind the CNI (one hop more) gets no token, so no
            # instance credentials; the host and hostNetwork pods still reach IMDS.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/sda1",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=p.root_volume_gib,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            user_data=base64.b64encode(p.user_data.encode()).decode(),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=tagged("node"))
                for kind in ("instance", "volume")
            ],
            update_default_version=True,
            tags=tags,
            opts=child,
        )
        asg = aws.autoscaling.Group(
            f"{name}-asg",
            min_size=0,
            max_size=p.max_nodes,
            desired_capacity=p.desired_nodes,
            capacity_rebalance=True,
            vpc_zone_identifiers=[s.id for s in private],
            mixed_instances_policy=aws.autoscaling.GroupMixedInstancesPolicyArgs(
                instances_distribution=aws.autoscaling.GroupMixedInstancesPolicyInstancesDistributionArgs(
                    on_demand_base_capacity=0,
                    on_demand_percentage_above_base_capacity=0,
                    # Without weights, price-capacity-optimized prices per instance and takes the
                    # smallest GPUs first; the fleet plan's order is cheapest per replica.
                    spot_allocation_strategy="capacity-optimized-prioritized",
                    spot_max_price=None if p.spot_max_price_usd is None else f"{p.spot_max_price_usd:.4f}",
                ),
                launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
                    launch_template_specification=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                        launch_template_id=template.id, version="$Latest"
                    ),
                    overrides=[
                        aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(instance_type=t)
                        for t in p.fleet.instance_types
                    ],
                ),
            ),
            tags=[
                aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True)
                for k, v in sorted(tags.items())
            ],
            opts=child,
        )
        aws.autoscaling.LifecycleHook(
            f"{name}-drain",
            autoscaling_group_name=asg.name,
            lifecycle_transition="autoscaling:EC2_INSTANCE_TERMINATING",
            heartbeat_timeout=p.drain_heartbeat_s,
            default_result="CONTINUE",
            opts=child,
        )
        rules = []
        for event, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{event}", event_pattern=json.dumps(pattern), tags=tags, opts=child
            )
            aws.cloudwatch.EventTarget(f"{name}-{event}-target", rule=rule.name, arn=queue.arn, opts=child)
            rules.append(rule.arn)
        aws.sqs.QueuePolicy(
            f"{name}-interruptions-policy",
            queue_url=queue.url,
            policy=pulumi.Output.all(queue.arn, *rules).apply(
                lambda arns: json.dumps(queue_policy(arns[0], list(arns[1:])))
            ),
            opts=child,
        )
        # For the identity `gpufleet burst run` acts as: this queue and this group, nothing else.
        controller = aws.iam.Policy(
            f"{name}-controller",
            description=f"gpufleet {p.site}: burst controller (interruption queue, burst group)",
            policy=pulumi.Output.all(queue.arn, asg.arn).apply(
                lambda arns: json.dumps(controller_policy(arns[0], arns[1], p.max_nodes))
            ),
            tags=tags,
            opts=child,
        )
        # For whoever publishes a revision once (docs/burst-boot.md): that prefix, write only.
        publisher = aws.iam.Policy(
            f"{name}-weights-publisher",
            description=f"gpufleet {p.site}: publish the burst model's pinned revision",
            policy=weights_arn.apply(lambda arn: json.dumps(publisher_policy(arn))),
            tags=tags,
            opts=child,
        )
        self.queue_url = queue.url
        self.asg_name = asg.name
        self.controller_policy_arn = controller.arn
        self.weights_url = weights_url
        self.image_id = image_id
        self.publisher_policy_arn = publisher.arn
        self.register_outputs(
            {
                "queueUrl": queue.url,
                "asgName": asg.name,
                "vpcId": vpc.id,
                "controllerPolicyArn": controller.arn,
                "weightsUrl": weights_url,
                "imageId": image_id,
                "publisherPolicyArn": publisher.arn,
            }
        )
