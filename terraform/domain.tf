# An optional custom domain: with `domain` and its Route 53 hosted zone set,
# prod is served at https://api.<domain> and staging at
# https://staging.api.<domain> (regional API Gateway domain names, one ACM
# certificate validated through the zone, a base path mapping of each name
# to its stage, alias records). With no domain, nothing of this exists.

variable "domain" {
  description = "A domain whose Route 53 hosted zone this account holds (`example.com`): prod at api.<domain>, staging at staging.api.<domain>; null for none."
  type        = string
  default     = null

  validation {
    condition     = var.domain == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain))
    error_message = "domain: a lower-case DNS name such as example.com."
  }
}

variable "hosted_zone_id" {
  description = "The id of `domain`'s public Route 53 hosted zone (Z...), where the certificate's validation records and the alias records go."
  type        = string
  default     = null

  validation {
    condition     = var.hosted_zone_id == null || can(regex("^[A-Z0-9]{1,32}$", var.hosted_zone_id))
    error_message = "hosted_zone_id: a Route 53 hosted zone id (upper-case letters and digits, Z...), without /hostedzone/."
  }
}

locals {
  # Stage -> its host name.
  hosts = var.domain == null ? {} : {
    prod    = "api.${var.domain}"
    staging = "staging.api.${var.domain}"
  }
}

resource "aws_acm_certificate" "api" {
  count = var.domain == null ? 0 : 1

  domain_name               = local.hosts.prod
  subject_alternative_names = [local.hosts.staging]
  validation_method         = "DNS"

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = var.hosted_zone_id != null
      error_message = "domain is set without hosted_zone_id: give the id of its Route 53 hosted zone."
    }
  }
}

# One validation record per name, keyed by the names (known at plan; the
# certificate's validation options are not until it exists).
resource "aws_route53_record" "validation" {
  for_each = local.hosts

  zone_id = var.hosted_zone_id
  name = one([
    for option in aws_acm_certificate.api[0].domain_validation_options :
    option.resource_record_name if option.domain_name == each.value
  ])
  type = one([
    for option in aws_acm_certificate.api[0].domain_validation_options :
    option.resource_record_type if option.domain_name == each.value
  ])
  records = [one([
    for option in aws_acm_certificate.api[0].domain_validation_options :
    option.resource_record_value if option.domain_name == each.value
  ])]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "api" {
  count = var.domain == null ? 0 : 1

  certificate_arn         = aws_acm_certificate.api[0].arn
  validation_record_fqdns = [for record in aws_route53_record.validation : record.fqdn]
}

resource "aws_api_gateway_domain_name" "this" {
  for_each = local.hosts

  domain_name              = each.value
  regional_certificate_arn = aws_acm_certificate_validation.api[0].certificate_arn
  security_policy          = "TLS_1_2"

  endpoint_configuration {
    types = ["REGIONAL"]
  }
}

resource "aws_api_gateway_base_path_mapping" "this" {
  for_each = local.hosts

  api_id      = aws_api_gateway_rest_api.this.id
  stage_name  = aws_api_gateway_stage.this[each.key].stage_name
  domain_name = aws_api_gateway_domain_name.this[each.key].domain_name
}

resource "aws_route53_record" "api" {
  for_each = local.hosts

  zone_id = var.hosted_zone_id
  name    = each.value
  type    = "A"

  alias {
    name                   = aws_api_gateway_domain_name.this[each.key].regional_domain_name
    zone_id                = aws_api_gateway_domain_name.this[each.key].regional_zone_id
    evaluate_target_health = false
  }
}
