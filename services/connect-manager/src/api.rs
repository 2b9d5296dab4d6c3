//! gRPC `etl.v1.ConnectManager`: the registry over the wire, with the same
//! operations and rules as the REST API (`rest`).

use std::{collections::BTreeMap, sync::Arc};

use etl_proto::v1::{
    AlterConnectorOffsetsRequest, ConfigFinding, ConfigValidation, ConnectorInfo,
    ConnectorOffset as PbOffset, ConnectorOffsets, ConnectorStatus, ConnectorTopics,
    CreateConnectorRequest, DeleteConnectorRequest, DeleteConnectorResponse,
    GetConnectorOffsetsRequest, GetConnectorStatusRequest, GetConnectorTopicsRequest,
    ListConnectorsRequest, ListConnectorsResponse, OffsetsChanged, PatchConnectorConfigRequest,
    PauseConnectorRequest, ResetConnectorOffsetsRequest, ResetConnectorTopicsRequest,
    ResetConnectorTopicsResponse, RestartConnectorRequest, RestartTaskRequest,
    ResumeConnectorRequest, StopConnectorRequest, TaskStatus, ValidateConnectorConfigRequest,
    connect_manager_server::ConnectManager,
};
use tonic::{Request, Response, Status};

use crate::{
    Error,
    connector::ConnectorConfig,
    options::Verdict,
    registry::{ConnectorOffset, ConnectorView, Registry, TaskView},
};

pub(crate) struct ConnectApi {
    pub(crate) registry: Arc<Registry>,
}

fn info(v: ConnectorView) -> ConnectorInfo {
    ConnectorInfo {
        r#type: v.type_name().to_string(),
        name: v.name,
        config: v.config.into_iter().collect(),
    }
}

fn task_status(t: &TaskView, worker: &str) -> TaskStatus {
    TaskStatus {
        id: t.id,
        state: t.state.as_str().to_string(),
        worker_id: t.worker.as_deref().unwrap_or(worker).to_string(),
        trace: t.trace().unwrap_or_default().to_string(),
        files_finished: t.status.files_finished,
        files_failed: t.status.files_failed,
        records: t.status.records,
        records_skipped: t.status.skipped,
        bytes: t.status.bytes,
        lag: t.status.lag,
        last_error: t.status.last_error.clone(),
    }
}

impl ConnectApi {
    fn worker(&self) -> String {
        self.registry.worker_id().unwrap_or_default().to_string()
    }

    fn status(&self, v: ConnectorView) -> ConnectorStatus {
        let worker = self.worker();
        ConnectorStatus {
            r#type: v.type_name().to_string(),
            state: v.state.as_str().to_string(),
            files_finished: v.status.files_finished,
            files_failed: v.status.files_failed,
            records: v.status.records,
            last_error: v.status.last_error.clone(),
            tasks: v.tasks.iter().map(|t| task_status(t, &worker)).collect(),
            worker_id: worker,
            records_skipped: v.status.skipped,
            bytes: v.status.bytes,
            lag: v.status.lag,
            stalled: v.status.stalled,
            trace: v.trace,
            name: v.name,
        }
    }

    async fn status_of(&self, name: &str) -> Result<Response<ConnectorStatus>, Status> {
        let v = self.registry.get(name).await?;
        Ok(Response::new(self.status(v)))
    }
}

fn json_field(what: &str, text: &str) -> Result<serde_json::Value, Status> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).map_err(|e| {
        Status::from(Error::InvalidRequest(format!(
            "{what} is not JSON ({e}): {text:?}"
        )))
    })
}

#[tonic::async_trait]
impl ConnectManager for ConnectApi {
    async fn create_connector(
        &self,
        request: Request<CreateConnectorRequest>,
    ) -> Result<Response<ConnectorInfo>, Status> {
        let CreateConnectorRequest { name, config } = request.into_inner();
        let config: BTreeMap<String, String> = config.into_iter().collect();
        let (view, created) = self.registry.put(&name, config, None).await?;
        tracing::info!(connector = %name, created, "connector configured over gRPC");
        Ok(Response::new(info(view)))
    }

    async fn list_connectors(
        &self,
        _request: Request<ListConnectorsRequest>,
    ) -> Result<Response<ListConnectorsResponse>, Status> {
        let connectors = self.registry.list().await.into_iter().map(info).collect();
        Ok(Response::new(ListConnectorsResponse { connectors }))
    }

    async fn get_connector_status(
        &self,
        request: Request<GetConnectorStatusRequest>,
    ) -> Result<Response<ConnectorStatus>, Status> {
        self.status_of(&request.into_inner().name).await
    }

    async fn delete_connector(
        &self,
        request: Request<DeleteConnectorRequest>,
    ) -> Result<Response<DeleteConnectorResponse>, Status> {
        self.registry.delete(&request.into_inner().name).await?;
        Ok(Response::new(DeleteConnectorResponse {}))
    }

    async fn patch_connector_config(
        &self,
        request: Request<PatchConnectorConfigRequest>,
    ) -> Result<Response<ConnectorInfo>, Status> {
        let PatchConnectorConfigRequest { name, set, remove } = request.into_inner();
        let mut patch: BTreeMap<String, Option<String>> =
            remove.into_iter().map(|k| (k, None)).collect();
        patch.extend(set.into_iter().map(|(k, v)| (k, Some(v))));
        let view = self.registry.patch(&name, patch).await?;
        Ok(Response::new(info(view)))
    }

    async fn pause_connector(
        &self,
        request: Request<PauseConnectorRequest>,
    ) -> Result<Response<ConnectorStatus>, Status> {
        let name = request.into_inner().name;
        self.registry.pause(&name).await?;
        self.status_of(&name).await
    }

    async fn resume_connector(
        &self,
        request: Request<ResumeConnectorRequest>,
    ) -> Result<Response<ConnectorStatus>, Status> {
        let name = request.into_inner().name;
        self.registry.resume(&name).await?;
        self.status_of(&name).await
    }

    async fn stop_connector(
        &self,
        request: Request<StopConnectorRequest>,
    ) -> Result<Response<ConnectorStatus>, Status> {
        let name = request.into_inner().name;
        self.registry.stop(&name).await?;
        self.status_of(&name).await
    }

    async fn restart_connector(
        &self,
        request: Request<RestartConnectorRequest>,
    ) -> Result<Response<ConnectorStatus>, Status> {
        let RestartConnectorRequest {
            name,
            include_tasks,
            only_failed,
        } = request.into_inner();
        let plan = self
            .registry
            .restart(&name, include_tasks, only_failed)
            .await?;
        Ok(Response::new(self.status(plan)))
    }

    async fn restart_task(
        &self,
        request: Request<RestartTaskRequest>,
    ) -> Result<Response<TaskStatus>, Status> {
        let RestartTaskRequest { name, task } = request.into_inner();
        self.registry.restart_task(&name, task).await?;
        let v = self.registry.get(&name).await?;
        let t = v
            .tasks
            .iter()
            .find(|t| t.id == task)
            .ok_or_else(|| Error::TaskNotFound {
                connector: name.clone(),
                task,
            })?;
        Ok(Response::new(task_status(t, &self.worker())))
    }

    async fn get_connector_topics(
        &self,
        request: Request<GetConnectorTopicsRequest>,
    ) -> Result<Response<ConnectorTopics>, Status> {
        let v = self.registry.get(&request.into_inner().name).await?;
        Ok(Response::new(ConnectorTopics {
            topics: v.active_topics,
        }))
    }

    async fn reset_connector_topics(
        &self,
        request: Request<ResetConnectorTopicsRequest>,
    ) -> Result<Response<ResetConnectorTopicsResponse>, Status> {
        self.registry
            .reset_topics(&request.into_inner().name)
            .await?;
        Ok(Response::new(ResetConnectorTopicsResponse {}))
    }

    async fn get_connector_offsets(
        &self,
        request: Request<GetConnectorOffsetsRequest>,
    ) -> Result<Response<ConnectorOffsets>, Status> {
        let offsets = self
            .registry
            .offsets(&request.into_inner().name)
            .await?
            .into_iter()
            .map(|o| PbOffset {
                partition_json: o.partition.to_string(),
                offset_json: o.offset.to_string(),
            })
            .collect();
        Ok(Response::new(ConnectorOffsets { offsets }))
    }

    async fn alter_connector_offsets(
        &self,
        request: Request<AlterConnectorOffsetsRequest>,
    ) -> Result<Response<OffsetsChanged>, Status> {
        let AlterConnectorOffsetsRequest { name, offsets } = request.into_inner();
        let offsets = offsets
            .iter()
            .map(|o| {
                Ok(ConnectorOffset {
                    partition: json_field("partition_json", &o.partition_json)?,
                    offset: json_field("offset_json", &o.offset_json)?,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let message = self.registry.alter_offsets(&name, offsets).await?;
        Ok(Response::new(OffsetsChanged { message }))
    }

    async fn reset_connector_offsets(
        &self,
        request: Request<ResetConnectorOffsetsRequest>,
    ) -> Result<Response<OffsetsChanged>, Status> {
        let message = self
            .registry
            .reset_offsets(&request.into_inner().name)
            .await?;
        Ok(Response::new(OffsetsChanged { message }))
    }

    async fn validate_connector_config(
        &self,
        request: Request<ValidateConnectorConfigRequest>,
    ) -> Result<Response<ConfigValidation>, Status> {
        let config: BTreeMap<String, String> = request.into_inner().config.into_iter().collect();
        let name = config
            .get("name")
            .filter(|n| !n.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| "validate".into());
        let review = ConnectorConfig::review(&name, &config);
        let mut findings = Vec::new();
        if let Err(e) = &review.parsed {
            findings.push(ConfigFinding {
                key: String::new(),
                verdict: "INVALID".into(),
                message: e.to_string(),
            });
        }
        findings.extend(review.findings.into_iter().map(|f| {
            ConfigFinding {
                verdict: match f.verdict {
                    Verdict::Unsupported => "UNSUPPORTED",
                    Verdict::Unknown => "UNKNOWN",
                    Verdict::NoEffect => "NO_EFFECT",
                }
                .into(),
                key: f.key,
                message: f.message,
            }
        }));
        let error_count = findings.iter().filter(|f| f.verdict != "NO_EFFECT").count() as u32;
        Ok(Response::new(ConfigValidation {
            r#type: review
                .kind
                .map(|k| k.as_str().to_string())
                .unwrap_or_default(),
            error_count,
            findings,
        }))
    }
}
