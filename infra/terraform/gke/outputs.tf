output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.main.name
}

output "get_credentials" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.main.name} --region ${var.region} --project ${var.project_id}"
}

output "gpu_node_selector" {
  description = "Labels on GPU nodes (the pipeline's node selector must be a subset)."
  value       = var.gpu_pool_labels
}

output "gpu_taint" {
  description = "Taint on GPU nodes (the pipeline's training tasks tolerate it)."
  value       = "${local.gpu_taint.key}=${local.gpu_taint.value}:NoSchedule"
}

output "gpu_accelerator_label" {
  description = "Label GKE puts on GPU nodes: cloud.google.com/gke-accelerator=<value>."
  value       = var.gpu_type
}

output "node_service_account" {
  description = "Service account the nodes run as."
  value       = google_service_account.nodes.email
}
