# The API's logs: each stage's access log (a JSON line per request, in a log
# group of its own with the functions' retention) and execution logging
# (api.tf's method settings, at var.execution_logging_level). API Gateway
# writes both with the region's API Gateway CloudWatch role, an account
# setting this stack makes unless var.api_gateway_account says the account
# has one.

locals {
  # One JSON object per request. `cargo xtask dev`'s gateway writes the same
  # lines to the local stack's log groups.
  access_log_format = jsonencode({
    requestId          = "$context.requestId"
    extendedRequestId  = "$context.extendedRequestId"
    ip                 = "$context.identity.sourceIp"
    requestTime        = "$context.requestTime"
    httpMethod         = "$context.httpMethod"
    resourcePath       = "$context.resourcePath"
    path               = "$context.path"
    status             = "$context.status"
    protocol           = "$context.protocol"
    responseLength     = "$context.responseLength"
    responseLatency    = "$context.responseLatency"
    integrationLatency = "$context.integrationLatency"
    integrationStatus  = "$context.integration.status"
    apiKeyId           = "$context.identity.apiKeyId"
    errorMessage       = "$context.error.message"
  })
}

resource "aws_cloudwatch_log_group" "access" {
  #checkov:skip=CKV_AWS_158:encrypted at rest by CloudWatch Logs; a customer-managed KMS key is an account decision
  #checkov:skip=CKV_AWS_338:retention is var.log_retention_days (14 days by default), a cost choice per stack
  for_each = local.stages

  name              = "/aws/apigateway/${var.name}/${each.key}/access"
  retention_in_days = var.log_retention_days
}

data "aws_partition" "current" {}

data "aws_iam_policy_document" "apigateway_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["apigateway.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "apigateway_logs" {
  count = var.api_gateway_account ? 1 : 0

  name               = "${var.name}-apigateway-logs"
  assume_role_policy = data.aws_iam_policy_document.apigateway_assume.json
}

resource "aws_iam_role_policy_attachment" "apigateway_logs" {
  count = var.api_gateway_account ? 1 : 0

  role       = aws_iam_role.apigateway_logs[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
}

resource "aws_api_gateway_account" "this" {
  count = var.api_gateway_account ? 1 : 0

  cloudwatch_role_arn = aws_iam_role.apigateway_logs[0].arn

  depends_on = [aws_iam_role_policy_attachment.apigateway_logs]
}
