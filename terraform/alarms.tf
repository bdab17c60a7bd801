# CloudWatch alarms, and the SNS topic they notify (var.alarm_emails are
# subscribed to it). On AWS, CloudWatch evaluates them; on the local stack,
# the local Lambda host and gateway record the same metrics into the
# emulator and `cargo xtask` evaluates these definitions there.
#
# - per function and alias (staging, prod): the error rate, throttles, and
#   the p99 duration against a share of the timeout;
# - per stage: the share of 5xx answers and the p99 latency;
# - during a canary (the pin's `canary`), the new version's own error rate
#   and p99 duration (its invocations through the prod alias, by
#   ExecutedVersion): what `cargo xtask publish --canary` watches, and
#   rolls back on. They come and go with the pin, as the weights do.
#
# Thresholds and periods: var.alarms. Missing data (no invocations) is not
# a breach.

resource "aws_sns_topic" "alarms" {
  #checkov:skip=CKV_AWS_26:CloudWatch cannot publish to a topic encrypted with the AWS-managed key (alias/aws/sns), and a customer-managed key is an account decision; the messages are alarm state changes, no data
  name = "${var.name}-alarms"
}

resource "aws_sns_topic_subscription" "alarms" {
  for_each = var.alarm_emails

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

locals {
  # What each function's alarms watch: its aliases ("status:prod"), and
  # during a canary its new version through the prod alias
  # ("status:canary", by ExecutedVersion). Named `<function>-<alias>-<kind>`
  # and `<function>-canary-<kind>`.
  function_alarms = merge(
    {
      for pair in setproduct(keys(local.functions), ["staging", "prod"]) :
      "${pair[0]}:${pair[1]}" => {
        name  = local.function_names[pair[0]]
        alias = pair[1]
        what  = "${local.function_names[pair[0]]}:${pair[1]}"
        dimensions = {
          FunctionName = local.function_names[pair[0]]
          Resource     = "${local.function_names[pair[0]]}:${pair[1]}"
        }
      }
    },
    {
      for function, version in local.canary : "${function}:canary" => {
        name  = local.function_names[function]
        alias = "canary"
        what  = "the canary of release ${var.prod_release.canary.release}: version ${version} through prod"
        dimensions = {
          FunctionName    = local.function_names[function]
          Resource        = "${local.function_names[function]}:prod"
          ExecutedVersion = version
        }
      }
    },
  )

  # The aliases' alone (throttles are no version's).
  alias_alarms = { for key, alarm in local.function_alarms : key => alarm if alarm.alias != "canary" }

  alarm = {
    period              = var.alarms.period_seconds
    evaluation_periods  = var.alarms.evaluation_periods
    datapoints_to_alarm = var.alarms.datapoints_to_alarm
    treat_missing_data  = "notBreaching"
    actions             = [aws_sns_topic.alarms.arn]
    # The p99 duration that breaches, in ms.
    duration_ms = var.timeout * 1000 * var.alarms.duration_p99_share
    # Errors / invocations, in percent (a period without invocations has no
    # datapoint: missing, not a breach).
    error_rate = "100 * errors / invocations"
  }
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  for_each = local.function_alarms

  alarm_name          = "${each.value.name}-${each.value.alias}-errors"
  alarm_description   = "${each.value.what}: more than ${var.alarms.error_rate_percent}% of invocations failed (4xx answers are errors too)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarms.error_rate_percent
  evaluation_periods  = local.alarm.evaluation_periods
  datapoints_to_alarm = local.alarm.datapoints_to_alarm
  treat_missing_data  = local.alarm.treat_missing_data
  alarm_actions       = local.alarm.actions
  ok_actions          = local.alarm.actions

  metric_query {
    id          = "rate"
    expression  = local.alarm.error_rate
    label       = "error rate (%)"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = ["errors", "invocations"]

    content {
      id = metric_query.value

      metric {
        namespace   = "AWS/Lambda"
        metric_name = title(metric_query.value)
        period      = local.alarm.period
        stat        = "Sum"
        dimensions  = each.value.dimensions
      }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "throttles" {
  for_each = local.alias_alarms

  alarm_name          = "${each.value.name}-${each.value.alias}-throttles"
  alarm_description   = "${each.value.what}: more than ${var.alarms.throttles} invocations throttled in a period."
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = each.value.dimensions
  statistic           = "Sum"
  period              = local.alarm.period
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarms.throttles
  evaluation_periods  = local.alarm.evaluation_periods
  datapoints_to_alarm = local.alarm.datapoints_to_alarm
  treat_missing_data  = local.alarm.treat_missing_data
  alarm_actions       = local.alarm.actions
  ok_actions          = local.alarm.actions
}

resource "aws_cloudwatch_metric_alarm" "duration" {
  for_each = local.function_alarms

  alarm_name          = "${each.value.name}-${each.value.alias}-duration"
  alarm_description   = "${each.value.what}: p99 duration above ${local.alarm.duration_ms} ms (${var.alarms.duration_p99_share * 100}% of the timeout)."
  namespace           = "AWS/Lambda"
  metric_name         = "Duration"
  dimensions          = each.value.dimensions
  extended_statistic  = "p99"
  period              = local.alarm.period
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.alarm.duration_ms
  evaluation_periods  = local.alarm.evaluation_periods
  datapoints_to_alarm = local.alarm.datapoints_to_alarm
  treat_missing_data  = local.alarm.treat_missing_data
  alarm_actions       = local.alarm.actions
  ok_actions          = local.alarm.actions
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  for_each = local.stages

  alarm_name          = "${var.name}-${each.key}-5xx"
  alarm_description   = "The ${each.key} stage: more than ${var.alarms.api_5xx_percent}% of answers were 5xx."
  namespace           = "AWS/ApiGateway"
  metric_name         = "5XXError"
  dimensions          = { ApiName = aws_api_gateway_rest_api.this.name, Stage = each.key }
  statistic           = "Average"
  period              = local.alarm.period
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarms.api_5xx_percent / 100
  evaluation_periods  = local.alarm.evaluation_periods
  datapoints_to_alarm = local.alarm.datapoints_to_alarm
  treat_missing_data  = local.alarm.treat_missing_data
  alarm_actions       = local.alarm.actions
  ok_actions          = local.alarm.actions
}

resource "aws_cloudwatch_metric_alarm" "api_latency" {
  for_each = local.stages

  alarm_name          = "${var.name}-${each.key}-latency"
  alarm_description   = "The ${each.key} stage: p99 latency above ${var.alarms.api_latency_p99_ms} ms."
  namespace           = "AWS/ApiGateway"
  metric_name         = "Latency"
  dimensions          = { ApiName = aws_api_gateway_rest_api.this.name, Stage = each.key }
  extended_statistic  = "p99"
  period              = local.alarm.period
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarms.api_latency_p99_ms
  evaluation_periods  = local.alarm.evaluation_periods
  datapoints_to_alarm = local.alarm.datapoints_to_alarm
  treat_missing_data  = local.alarm.treat_missing_data
  alarm_actions       = local.alarm.actions
  ok_actions          = local.alarm.actions
}
