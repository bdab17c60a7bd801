output "api_id" {
  description = "ID of the REST API."
  value       = aws_api_gateway_rest_api.this.id
}

output "invoke_urls" {
  description = "Base URL of each stage."
  value       = { for stage, this in aws_api_gateway_stage.this : stage => this.invoke_url }
}

output "api_revision" {
  description = "Hash of the API configuration staging is deployed from (what `publish` pins for prod)."
  value       = local.api_revision
}

output "function_names" {
  description = "Lambda function name of each function of the manifest."
  value       = { for name, function in aws_lambda_function.this : name => function.function_name }
}

output "table_names" {
  description = "Users table of each stage."
  value       = { for stage, table in aws_dynamodb_table.users : stage => table.name }
}

output "chirps_table_names" {
  description = "Chirps table of each stage."
  value       = { for stage, table in aws_dynamodb_table.chirps : stage => table.name }
}

output "api_keys" {
  description = "Each API key's id, by \"consumer/stage\" (the ids, not the secrets: `cargo xtask apikey` reads a value)."
  value       = { for key, api_key in aws_api_gateway_api_key.this : key => api_key.id }
}

output "files_buckets" {
  description = "Files bucket of each stage."
  value       = { for stage, bucket in aws_s3_bucket.files : stage => bucket.bucket }
}

output "region" {
  description = "Region everything is deployed in."
  value       = var.region
}

output "custom_urls" {
  description = "Base URL of each stage at the custom domain (empty without `domain`)."
  value       = { for stage, host in local.hosts : stage => "https://${host}" }
}

output "alarms" {
  description = "The alarms: their period and evaluation, the SNS topic they notify, every alarm's name, and a canary's own alarms by function (while one is in flight)."
  value = {
    period_seconds      = var.alarms.period_seconds
    evaluation_periods  = var.alarms.evaluation_periods
    datapoints_to_alarm = var.alarms.datapoints_to_alarm
    topic_arn           = aws_sns_topic.alarms.arn
    names = sort(concat(
      [for alarm in aws_cloudwatch_metric_alarm.errors : alarm.alarm_name],
      [for alarm in aws_cloudwatch_metric_alarm.throttles : alarm.alarm_name],
      [for alarm in aws_cloudwatch_metric_alarm.duration : alarm.alarm_name],
      [for alarm in aws_cloudwatch_metric_alarm.api_5xx : alarm.alarm_name],
      [for alarm in aws_cloudwatch_metric_alarm.api_latency : alarm.alarm_name],
    ))
    canary = {
      for function in keys(local.canary) : function => [
        aws_cloudwatch_metric_alarm.errors["${function}:canary"].alarm_name,
        aws_cloudwatch_metric_alarm.duration["${function}:canary"].alarm_name,
      ]
    }
  }
}

output "access_log_groups" {
  description = "Each stage's access log group."
  value       = { for stage, group in aws_cloudwatch_log_group.access : stage => group.name }
}

output "api_name" {
  description = "The REST API's name (API Gateway's metrics are by ApiName and Stage)."
  value       = aws_api_gateway_rest_api.this.name
}
