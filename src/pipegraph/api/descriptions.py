"""Descriptions of the schema's types, fields, arguments and enum values that the code does not give.

Descriptions written beside the code (``strawberry.field(description=...)``, docstrings) stay where they
are; this table fills in the rest, applied once to the built schema by :func:`describe`, so the SDL,
introspection and GraphiQL's docs all show them. Some fields mean the same on every type and are
described by rule (``id``, ``createdAt``, ``updatedAt``, ``userErrors``, a mutation's ``input``, a
payload's object). A line naming nothing in the schema is an error: the table cannot go stale silently.

Lines read ``Type: text``, ``Type.field: text``, ``Type.field(argument): text`` or ``Enum.VALUE: text``.
"""

from __future__ import annotations

from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLEnumValue,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
)

_TABLE = """
Activity: A call, email, meeting, note or task logged on a lead.
Activity.kind: What sort of activity it is.
Activity.subject: One line saying what it is about.
Activity.body: Free text; empty if none.
Activity.dueAt: When a planned activity is due; null if it has no due time.
Activity.doneAt: When it was done; null while still to do.
Activity.owner: Who logged it; null for the system.
Activity.lead: The lead it was logged on.
ActivityKind: What sort of activity.
ActivityKind.CALL: A phone or video call.
ActivityKind.EMAIL: An email sent or received.
ActivityKind.MEETING: A meeting.
ActivityKind.NOTE: A note for the record.
ActivityKind.TASK: Something to do.
ActivityPayload: The activity logged or completed, or why not.
AddStageInput: A new stage at the end of a pipeline's selling stages (or among its post-sale stages).
AddStageInput.pipelineId: The Pipeline to add it to.
AddStageInput.name: The stage's name, unique in its pipeline.
AddStageInput.probability: Configured chance (0 to 1) that a lead here is won; null: learnt from history.
AddStageInput.targetDays: Days a lead should spend here before it counts as stalled; null: no target.
AddStageInput.exitCriteria: What must be true for a lead to leave the stage.
AddStageInput.isPostSale: Whether the stage comes after the sale (onboarding, renewal...).
ArrivalCalibration: How fast new leads arrive, as calibrated from history.
ArrivalCalibration.created: Leads created in the window.
ArrivalCalibration.windowDays: Length of the window counted, in days.
ArrivalCalibration.ratePerDay: New leads per day used by the model.
ArrivalCalibration.source: Whether the rate comes from history or a prior.
Bottleneck: The selling stage where the most value is lost or stuck, with the figures that make it so.
Bottleneck.stageId: The Stage's ID.
Bottleneck.name: The stage's name.
Bottleneck.lostValue: Value of the leads lost in this stage in the window.
Bottleneck.conversionRate: Share of the leads leaving the stage that moved forward; null without exits.
Bottleneck.othersConversionRate: The same rate over the other selling stages, for comparison.
Bottleneck.stalledCount: Open leads here past the stage's target days.
Bottleneck.stalledValue: Value of those stalled leads.
Bottleneck.avgDaysInStage: Average days a lead spent here; null without stays.
Bottleneck.targetDays: The stage's target days; null if it has none.
Calibration: What the simulation learnt from the pipeline's history, and where it fell back on priors.
Calibration.asOf: The instant the history was read up to (ISO 8601).
Calibration.currency: Currency of every amount (ISO 4217).
Calibration.stages: Per selling stage: conversion and time in stage.
Calibration.dealSize: Size of won deals.
Calibration.arrivals: Rate of new leads.
Calibration.reps: Sales reps and their capacity.
Calibration.openLeads: Open leads simulated from where they stand.
Calibration.openCohorts: Groups of open leads sharing a stage and age band.
Calibration.notes: Plain-language remarks on thin or missing data.
CalibrationSource.HISTORY: Learnt from the pipeline's history.
CalibrationSource.PRIOR: Too little history: a default assumption.
ImportJob.pipelineId: The pipeline the leads go into.
ImportJob.status: QUEUED, RUNNING, then SUCCEEDED, FAILED or CANCELLED.
ImportJob.rowsRead: Rows of the file read and checked so far.
ImportJob.rowsLoaded: Good rows staged so far (written when the job succeeds).
ImportJob.importedCount: Leads created: all the rows when the job succeeded, else none.
ImportJob.problems: The first 100 problems, each naming its row and column.
ImportJob.error: Why the job failed or was cancelled, when not because of its rows; null otherwise.
ImportJob.finishedAt: When it ended; null while it runs.
Query.importJob(id): The import job's global ID.
Subscription.importProgress(jobId): The import job's global ID.
TimeFamily.EXPONENTIAL: Memoryless: the chance of leaving the stage does not change with time spent there.
TimeFamily.WEIBULL: Shape below 1: the longer a lead waits, the less likely it moves soon; above 1, the more.
TimeFamily.LOGNORMAL: Most stays near a typical length, with a long tail of slow ones.
TimeFamily.GAMMA: A sum of phases: stays rarely very short when its shape is above 1.
CloseLeadInput: Close a lead as won or lost.
CloseLeadInput.leadId: The Lead to close.
CloseLeadInput.outcome: Won or lost.
CloseLeadInput.reason: Why it was lost (required for LOST).
CloseLeadInput.expectedVersion: The lead's version you read: if it has changed since, CONFLICT.
CloseOutcome: How a lead ends.
CloseOutcome.WON: The deal was won.
CloseOutcome.LOST: The deal was lost.
CompleteActivityInput: Mark an activity done.
CompleteActivityInput.activityId: The Activity to mark done.
CapacityPlanInput: The capacity curve to compute: reps added 0..repsAdded on the same simulated leads.
CapacityPlanInput.pipelineId: The Pipeline.
CapacityPlanInput.repsAdded: The most reps added (1 to 10): rows for 0, 1, ..., repsAdded.
CapacityPlanInput.horizonDays: Days ahead to simulate.
CapacityPlanInput.goal: A revenue goal, for the chance of reaching it with each rep count.
CapacityPlanInput.trials: Monte Carlo trials per rep count (2 to 5000; default 1000).
CapacityPlanInput.seed: Random seed; every rep count sees the same leads (common random numbers).
CapacityPlanInput.asOf: Calibrate on the history up to this moment (with a time zone) instead of now.
CapacityPlanResult: What each added rep buys: revenue, goal odds, waits and utilisation per rep count.
CapacityPlanResult.pipelineId: The Pipeline.
CapacityPlanResult.horizonDays: Days simulated.
CapacityPlanResult.trials: Monte Carlo trials per rep count.
CapacityPlanResult.seed: Random seed used.
CapacityPlanResult.engine: The simulation engine that ran (queue: the FIFO rep-slot engine).
CapacityPlanResult.goal: The goal asked about; null if none.
CapacityPlanResult.reps: Reps in the calibrated model, before any are added.
CapacityPlanResult.rows: One row per rep count, fewest reps first.
CapacityPlanResult.knee: Reps added after which one more buys less than half the one before; null if none.
CapacityPlanResult.summary: The curve in words: what the 1st, 2nd, ... added rep buys, and the knee.
CapacityPlanResult.calibration: What the model learnt from history.
CapacityPlanRow: The model with some reps added.
CapacityPlanRow.repsAdded: Reps added to the calibrated team.
CapacityPlanRow.reps: Reps in all.
CapacityPlanRow.revenue: Revenue won within the horizon.
CapacityPlanRow.wins: Deals won within the horizon.
CapacityPlanRow.pGoal: Chance of reaching the goal; null without a goal.
CapacityPlanRow.waitP90Days: 90th percentile of a new lead's wait for a free rep, in days.
CapacityPlanRow.utilisation: Share of rep capacity in use over the measurement window.
CapacityPlanRow.gain: Mean revenue this row adds over the row before (paired trials); null on the first row.
CapacityPlanRow.gainSe: Monte Carlo standard error of the gain; null on the first row.
MeasuredValue: A value estimated by simulation, with its Monte Carlo standard error.
MeasuredValue.value: The estimate; null when nothing was measured (no lead arrived in the window).
MeasuredValue.se: Its Monte Carlo standard error; null when it could not be computed.
Query.capacityPlan(input): The pipeline and how many reps to add at most.
Query.capacityPlan: The capacity curve of the calibrated model: what each added rep buys, the knee named.
CountRange: A simulated count: mean, spread and percentiles over the trials.
CountRange.mean: Mean over the trials.
CountRange.sd: Standard deviation over the trials.
CountRange.p10: 10th percentile: a pessimistic outcome.
CountRange.p50: Median.
CountRange.p90: 90th percentile: an optimistic outcome.
Coverage: How far the open pipeline covers what remains of the revenue goal.
Coverage.goal: The revenue goal for the window.
Coverage.goalIsStored: Whether the goal is a stored Goal (false: given as the goal argument).
Coverage.wonValue: Value won in the window so far.
Coverage.remaining: Goal less value won (zero once reached).
Coverage.attainment: Value won ÷ goal; null when the goal is zero.
Coverage.covered: Whether coverage reaches the required coverage; null when either is unknown.
CreateLeadInput: A new lead, in its pipeline's first stage.
CreateLeadInput.pipelineId: The Pipeline it belongs to.
CreateLeadInput.title: A short name for the deal.
CreateLeadInput.company: The prospect's company.
CreateLeadInput.contactName: The contact's name.
CreateLeadInput.contactEmail: The contact's email.
CreateLeadInput.contactPhone: The contact's phone.
CreateLeadInput.source: Where the lead came from (web, referral...), for the breakdowns.
CreateLeadInput.value: Expected deal value.
CreateLeadInput.expectedCloseDate: When the deal is expected to close.
CreateLeadInput.budget: BANT: the prospect has budget.
CreateLeadInput.authority: BANT: the contact can decide.
CreateLeadInput.need: BANT: the prospect has the need.
CreateLeadInput.timeline: BANT: the prospect has a timeline.
CreatePipelineInput: A new pipeline, with the stages of a template or given ones.
CreatePipelineInput.name: The pipeline's name, unique.
CreatePipelineInput.currency: Currency of its amounts (ISO 4217).
CreatePipelineInput.description: What the pipeline is for.
CreateUserInput: A new user.
CreateUserInput.name: The user's name.
CreateUserInput.email: The user's email, unique.
CreateUserInput.role: What the user may do.
CreateUserInput.capacity: Most open leads the user works at once.
DealSizeCalibration: Size of won deals, as calibrated from history.
DealSizeCalibration.wins: Won deals counted.
DealSizeCalibration.mean: Mean won deal value.
DealSizeCalibration.sd: Standard deviation of won deal values.
DealSizeCalibration.source: Whether the figures come from history or a prior.
ForecastInput: A revenue forecast over a horizon.
ForecastInput.pipelineId: The Pipeline to forecast.
ForecastInput.horizonDays: Days ahead to simulate.
ForecastInput.goal: A revenue goal, for the chance of reaching it.
ForecastInput.trials: Monte Carlo trials.
ForecastInput.seed: Random seed: the same seed gives the same answer.
ForecastResult: Revenue and wins expected over the horizon, with uncertainty.
ForecastResult.pipelineId: The Pipeline forecast.
ForecastResult.horizonDays: Days simulated.
ForecastResult.trials: Monte Carlo trials run.
ForecastResult.seed: Random seed used.
ForecastResult.engine: The simulation engine that ran (vectorized, des or analytic).
ForecastResult.revenue: Revenue won within the horizon.
ForecastResult.wins: Deals won within the horizon.
ForecastResult.expectedRevenue: Mean revenue won.
ForecastResult.goal: The goal asked about; null if none.
ForecastResult.histogram: Distribution of revenue over the trials.
ForecastResult.revenueByWeek: Revenue won by each week's end and by the horizon: P10/P50/P90 (a fan chart).
ForecastResult.calibration: What the model learnt from history.
Goal.pipelineId: The Pipeline the goal is for.
Goal.periodStart: First day of the period.
Goal.periodEnd: Last day of the period (inclusive).
Goal.amount: Revenue to win in the period.
RevenueBand: Cumulative revenue won by a day of the horizon, over the trials.
RevenueBand.day: Days from the start of the horizon.
RevenueBand.p10: 10th percentile of the revenue won by that day.
RevenueBand.p50: Median revenue won by that day.
RevenueBand.p90: 90th percentile of the revenue won by that day.
HistogramBucket: Trials whose revenue fell in [low, high).
HistogramBucket.low: Lower bound (inclusive).
HistogramBucket.high: Upper bound (exclusive).
HistogramBucket.trials: Trials in the bucket.
ImportLeadsInput: Leads from CSV: all are imported, or none if any row is invalid.
ImportLeadsInput.pipelineId: The Pipeline to import into.
ImportLeadsPayload: The leads imported, or every row's errors.
ImportLeadsPayload.leads: The leads created.
ImportLeadsPayload.importedCount: How many were created.
Lead: A deal being worked through a pipeline.
Lead.title: A short name for the deal.
Lead.company: The prospect's company.
Lead.contactName: The contact's name.
Lead.contactEmail: The contact's email.
Lead.contactPhone: The contact's phone.
Lead.source: Where the lead came from.
Lead.value: Expected (or, once won, actual) deal value.
Lead.status: Open, won or lost.
Lead.lostReason: Why it was lost; empty otherwise.
Lead.expectedCloseDate: When the deal is expected to close.
Lead.budget: BANT: the prospect has budget.
Lead.authority: BANT: the contact can decide.
Lead.need: BANT: the prospect has the need.
Lead.timeline: BANT: the prospect has a timeline.
Lead.closedAt: When it was won or lost; null while open.
Lead.stageEnteredAt: When it entered its current stage.
Lead.stage: The stage it is in.
Lead.owner: The user working it; null if unassigned.
Lead.pipeline: The pipeline it belongs to.
Lead.activities(first): How many to return (at most the page size limit).
LeadConnection: A page of leads.
LeadConnection.edges: The leads with their cursors.
LeadConnection.nodes: The leads alone.
LeadConnection.pageInfo: Whether there are more pages, and their cursors.
LeadEdge: A lead and its cursor.
LeadEdge.node: The lead.
LeadEdge.cursor: Pass as after: (or before:) to page on from this lead.
LeadEvent: A change to a lead, as it committed.
LeadEvent.kind: What happened.
LeadEvent.leadId: The Lead changed.
LeadEvent.occurredAt: When the change committed.
LeadEventKind: What happened to a lead.
LeadEventKind.CREATED: The lead was created.
LeadEventKind.UPDATED: Its fields changed.
LeadEventKind.MOVED: It moved to another stage.
LeadEventKind.CLOSED: It was won or lost.
LeadEventKind.REOPENED: A closed lead was reopened.
LeadFilter: Which leads to list; every given condition must hold.
LeadFilter.stageIds: In one of these Stages.
LeadFilter.statuses: With one of these statuses.
LeadFilter.ownerIds: Owned by one of these Users.
LeadFilter.sources: From one of these sources.
LeadFilter.minValue: Value at least this.
LeadFilter.maxValue: Value at most this.
LeadFilter.createdAfter: Created at or after this instant.
LeadFilter.createdBefore: Created before this instant.
LeadOrder: How to order leads.
LeadOrder.field: The field to order by.
LeadOrder.direction: Ascending or descending.
LeadOrderField: A field leads can be ordered by (ties broken by ID).
LeadOrderField.CREATED_AT: When the lead was created.
LeadOrderField.UPDATED_AT: When the lead last changed.
LeadOrderField.STAGE_ENTERED_AT: When the lead entered its stage.
LeadOrderField.VALUE: The lead's value.
LeadOrderField.TITLE: The lead's title.
LeadPayload: The lead as changed, or why not.
LeadStatus: Where a lead stands.
LeadStatus.OPEN: Still being worked.
LeadStatus.WON: Closed as won.
LeadStatus.LOST: Closed as lost.
LeadsNeededInput: How many new leads a revenue goal needs, at a confidence.
LeadsNeededInput.pipelineId: The Pipeline.
LeadsNeededInput.goal: Revenue to reach within the horizon.
LeadsNeededInput.confidence: Chance of reaching the goal to aim for (0 to 1).
LeadsNeededInput.horizonDays: Days to reach it in.
LeadsNeededInput.trials: Monte Carlo trials per evaluation.
LeadsNeededInput.seed: Random seed.
LeadsNeededResult: New leads needed to reach the goal at the confidence asked.
LeadsNeededResult.pipelineId: The Pipeline.
LeadsNeededResult.goal: The goal.
LeadsNeededResult.confidence: The confidence asked for.
LeadsNeededResult.horizonDays: Days simulated.
LeadsNeededResult.trials: Monte Carlo trials per evaluation.
LeadsNeededResult.leadsPerWeek: New leads per week needed.
LeadsNeededResult.intervalHigh: Upper end of the interval on the leads needed; null if unbounded.
LeadsNeededResult.naiveLeadsPerWeek: The reverse-funnel answer (goal ÷ deal size ÷ win rate), per week.
LeadsNeededResult.calibration: What the model learnt from history.
LogActivityInput: Log an activity on a lead.
LogActivityInput.leadId: The Lead.
LogActivityInput.kind: What sort of activity.
LogActivityInput.subject: One line saying what it is about.
LogActivityInput.body: Free text.
LogActivityInput.dueAt: When it is due, for a planned activity.
LogActivityInput.doneAt: When it was done; null: still to do.
MetricsBreakdown: The window's figures for one value of a dimension.
MetricsBreakdown.label: Human-readable name of the key.
MetricsBreakdown.created: Leads created in the window.
MetricsBreakdown.wonCount: Leads won in the window.
MetricsBreakdown.wonValue: Value won in the window.
MetricsBreakdown.lostCount: Leads lost in the window.
MetricsBreakdown.lostValue: Value lost in the window.
MetricsBreakdown.winRate: Won ÷ (won + lost) in the window; null without closes.
MetricsBreakdown.avgWonDeal: Mean value of the deals won; null without wins.
MetricsBreakdown.avgSalesCycleDays: Mean days from creation to win; null without wins.
MetricsBreakdown.openCount: Open leads now.
MetricsBreakdown.openValue: Value of the open leads now.
MetricsBucket: One interval of the time series.
MetricsBucket.start: First day of the interval.
MetricsBucket.created: Leads created in it.
MetricsBucket.wonCount: Leads won in it.
MetricsBucket.wonValue: Value won in it.
MetricsBucket.lostCount: Leads lost in it.
MetricsBucket.cohortWon: Of the leads created in it, how many are won by now.
MetricsDimension: What to break metrics down by.
MetricsDimension.OWNER: The lead's owner (key: a User ID).
MetricsDimension.SOURCE: The lead's source.
MetricsDimension.SCORE: The lead's qualification score (0 to 100 in steps of 25).
MetricsInterval: Length of a time-series interval.
MetricsInterval.WEEK: Weeks starting on Monday.
MetricsInterval.MONTH: Calendar months.
MoveLeadInput: Move a lead to another stage of its pipeline.
MoveLeadInput.leadId: The Lead to move.
MoveLeadInput.toStageId: The Stage to move it to.
Mutation: Changes; each answers with the changed object or userErrors, and writes all or nothing.
Mutation.updatePipeline: Rename, describe, change currency or archive a pipeline (ADMIN).
Mutation.addStage: Add a stage to a pipeline (ADMIN).
Mutation.updateStage: Change a stage (ADMIN).
Mutation.reorderStages: Put a pipeline's stages in a new order (ADMIN).
Mutation.createLead: Create a lead in its pipeline's first stage (REP or higher).
Mutation.closeLead: Close a lead as won or lost.
Mutation.reopenLead: Reopen a closed lead.
Mutation.logActivity: Log an activity on a lead.
Mutation.completeActivity: Mark an activity done.
Mutation.createUser: Create a user (ADMIN).
Mutation.updateUser: Change or deactivate a user (ADMIN).
Mutation.cancelSimulation(id): The SimulationJob to stop.
Node.id: Global ID, usable with node(id:).
OrderDirection: Ascending or descending.
OrderDirection.ASC: Smallest first.
OrderDirection.DESC: Largest first.
OverallMetrics: The whole pipeline's figures for the window.
OverallMetrics.leadsCreated: Leads created in the window.
OverallMetrics.wonCount: Leads won in the window.
OverallMetrics.wonValue: Value won in the window.
OverallMetrics.lostCount: Leads lost in the window.
OverallMetrics.lostValue: Value lost in the window.
OverallMetrics.avgWonDeal: Mean value of the deals won; null without wins.
OverallMetrics.avgSalesCycleDays: Mean days from creation to win; null without wins.
OverallMetrics.medianSalesCycleDays: Median days from creation to win; null without wins.
OverallMetrics.openCount: Open leads now.
OverallMetrics.openValue: Value of the open leads now.
OverallMetrics.weightedPipeline: Open value weighted by each stage's win probability.
PageInfo: Where a page stands in the whole list.
PageInfo.hasNextPage: Whether leads follow this page.
PageInfo.hasPreviousPage: Whether leads precede this page.
PageInfo.startCursor: Cursor of the first lead; null on an empty page.
PageInfo.endCursor: Cursor of the last lead; null on an empty page.
Pipeline: A sales process: its stages in order, and the leads going through them.
Pipeline.name: The pipeline's name, unique.
Pipeline.currency: Currency of its amounts (ISO 4217).
Pipeline.description: What it is for.
Pipeline.archived: Archived pipelines are hidden from lists unless asked for.
PipelineMetrics: Stage-by-stage and overall figures for a window.
PipelineMetrics.pipelineId: The Pipeline.
PipelineMetrics.from: Start of the window (inclusive).
PipelineMetrics.to: End of the window (exclusive).
PipelineMetrics.now: The clock used for ages and stalls.
PipelineMetrics.stages: Per stage, in order.
PipelineMetrics.overall: The whole pipeline.
PipelineMetrics.coverage: Coverage of the revenue goal; null without a goal.
PipelineMetrics.bottleneck: The stage losing the most; null without selling stages.
PipelineMetrics.breakdown(by): The dimension to break down by.
PipelineMetrics.timeSeries(interval): Length of each interval.
PipelinePayload: The pipeline as changed, or why not.
Probability: A probability estimated by simulation.
Probability.value: The estimate (0 to 1).
ProbabilitySource.CONFIGURED: The stage's configured probability.
ProbabilitySource.EMPIRICAL: Learnt from the stage's history.
ProbabilitySource.NONE: Neither: no probability.
Query: Reads.
Query.pipelines: Every pipeline, by name.
Query.pipeline: A pipeline by ID; null if there is none.
Query.lead: A lead by ID; null if there is none.
Query.users: Every user, by name.
Query.node(id): A global ID of any type.
Query.pipelines(includeArchived): Include archived pipelines.
Query.pipeline(id): The Pipeline's ID.
Query.lead(id): The Lead's ID.
Query.leads(pipelineId): Only this Pipeline's leads.
Query.leads(filter): Conditions the leads must meet.
Query.leads(orderBy): Order; default: newest first.
Query.leads(first): Page size, going forwards.
Query.leads(after): Cursor to start after.
Query.leads(last): Page size, going backwards.
Query.leads(before): Cursor to end before.
Query.users(includeInactive): Include deactivated users.
Query.pipelineMetrics(pipelineId): The Pipeline.
Query.pipelineMetrics(from): Start of the window (inclusive).
Query.pipelineMetrics(to): End of the window (exclusive).
Query.goals(pipelineId): The Pipeline.
Query.forecast(input): What to forecast.
Query.leadsNeeded(input): The goal and confidence.
Query.whatIf(input): The change to compare.
Query.simulationJob(id): The SimulationJob's ID.
RemoveStageInput: Remove a stage with no open leads.
RemoveStageInput.stageId: The Stage to remove.
RemoveStagePayload: The stage removed, or why not.
RemoveStagePayload.removedStageId: ID of the removed Stage.
ReopenLeadInput: Reopen a closed lead.
ReopenLeadInput.leadId: The Lead to reopen.
ReopenLeadInput.expectedVersion: The lead's version you read: if it has changed since, CONFLICT.
ReorderStagesInput: A pipeline's stages in their new order.
ReorderStagesInput.pipelineId: The Pipeline.
RepsCalibration: Sales reps and their capacity, as the model sees them.
RepsCalibration.count: Active REP users.
RepsCalibration.totalCapacity: Sum of their capacities.
RepsCalibration.leadsEach: Mean capacity per rep, rounded: open leads each works at once.
RevenueRange: Simulated revenue: mean, spread and percentiles over the trials.
RevenueRange.mean: Mean over the trials.
RevenueRange.sd: Standard deviation over the trials.
RevenueRange.p50: Median.
Role.VIEWER: Reads everything, changes nothing.
Role.REP: Also creates leads and changes their own.
Role.MANAGER: Also changes any lead and sets goals.
Role.ADMIN: Also changes pipelines, stages, users and API keys.
SetGoalInput: A revenue goal for a period.
SetGoalInput.pipelineId: The Pipeline.
SetGoalInput.periodStart: First day of the period.
SetGoalInput.amount: Revenue to win in the period.
SetGoalPayload: The goal set, or why not.
SimulationJob.pipelineId: The Pipeline simulated.
SimulationJob.kind: Forecast or leads needed.
SimulationJob.status: Where the job stands.
SimulationJob.trials: Trials to run.
SimulationJob.trialsDone: Trials run so far.
SimulationJob.parameters: The inputs it was started with.
SimulationJob.error: Why it failed; null otherwise.
SimulationJob.createdAt: When it was queued.
SimulationJob.startedAt: When it started running; null while queued.
SimulationJob.finishedAt: When it ended; null until then.
SimulationJob.updatedAt: When it last reported progress.
SimulationJobPayload: The job, or why not.
SimulationJobStatus: Where a simulation job stands.
SimulationJobStatus.QUEUED: Waiting to run.
SimulationJobStatus.RUNNING: Running.
SimulationJobStatus.SUCCEEDED: Done: its result is ready.
SimulationJobStatus.FAILED: Ended with an error.
SimulationJobStatus.CANCELLED: Stopped on request.
SimulationKind: What a job simulates.
SimulationKind.FORECAST: Revenue over the horizon.
SimulationKind.LEADS_NEEDED: New leads a goal needs.
Stage: A step of a pipeline that leads go through.
Stage.name: The stage's name, unique in its pipeline.
Stage.position: Its place in the pipeline, from 0.
Stage.exitCriteria: What must be true for a lead to leave it.
Stage.pipeline: The pipeline it belongs to.
Stage.leads(filter): Conditions the leads must meet.
Stage.leads(orderBy): Order; default: newest first.
Stage.leads(first): Page size, going forwards.
Stage.leads(after): Cursor to start after.
Stage.leads(last): Page size, going backwards.
Stage.leads(before): Cursor to end before.
Stage.leadCount(status): Only leads with this status.
Stage.totalValue(status): Only leads with this status.
StageCalibration: One selling stage as calibrated from history.
StageCalibration.stageId: The Stage's ID.
StageCalibration.name: The stage's name.
StageCalibration.conversionSd: Standard error of the conversion rate.
StageCalibration.conversionSource: Whether conversion comes from history or a prior.
StageCalibration.losses: Leads lost here.
StageCalibration.exits: Leads that left the stage (forward or lost).
StageCalibration.meanDaysSe: Standard error of the mean days in stage; null without stays.
StageCalibration.timeSource: Whether the time in stage comes from history or a prior.
StageChange: One row of a lead's history: a creation, move, close or reopen.
StageChange.toStatus: The status it had after.
StageChange.changedAt: When it happened.
StageChange.fromStage: The stage it left; null on creation.
StageChange.toStage: The stage it entered (or stayed in).
StageChange.actor: Who made the change; null for the system.
StageInput: A stage of a new pipeline.
StageInput.name: The stage's name, unique in its pipeline.
StageInput.probability: Configured chance (0 to 1) that a lead here is won; null: learnt from history.
StageInput.targetDays: Days a lead should spend here before it counts as stalled; null: no target.
StageInput.exitCriteria: What must be true for a lead to leave the stage.
StageInput.isPostSale: Whether the stage comes after the sale.
StageMetrics: One stage's figures for the window.
StageMetrics.stageId: The Stage's ID.
StageMetrics.name: The stage's name.
StageMetrics.position: Its place in the pipeline, from 0.
StageMetrics.isPostSale: Whether it comes after the sale.
StageMetrics.targetDays: Its target days; null if none.
StageMetrics.enteredConversionRate: Of the stays started in the window, the share that moved on or won.
StageMetrics.movedBack: Stays that ended in a move back to an earlier stage.
StageMetrics.won: Stays that ended in a win in the window.
StageMetrics.lostValue: Value of the leads lost while in it, in the window.
StageMetrics.avgDaysInStage: Mean days of the stays that ended in the window.
StageMetrics.medianDaysInStage: Median days of those stays.
StageMetrics.currentCount: Leads in it now.
StageMetrics.currentValue: Their value.
StageMetrics.weightedValue: Their value × the stage's win probability.
StageMetrics.avgAgeDays: Mean days the current leads have been in it.
StageMetrics.maxAgeDays: Most days any current lead has been in it.
StageMetrics.stalledValue: Value of the current leads past the target days.
StageMetrics.empiricalWinProbability: Chance of winning from here, from the window's exits; null without.
StageMetrics.winProbability: The probability used for weighting (see probabilitySource).
StageMetrics.probabilitySource: Where winProbability comes from.
StagePayload: The stage as changed, or why not.
StageTemplate: A ready-made set of stages from a common sales process.
StageTemplate.key: Pass as createPipeline's template.
StageTemplate.name: The template's name.
StageTemplate.description: What sort of sales it fits.
StageTemplate.stages: Its stages, in order.
StageTemplateStage: A stage of a template.
StageTemplateStage.name: The stage's name.
StageTemplateStage.probability: Its configured win probability.
StageTemplateStage.targetDays: Its target days.
StageTemplateStage.exitCriteria: What must be true to leave it.
StageTemplateStage.isPostSale: Whether it comes after the sale.
StartSimulationInput: A simulation to run in the background.
StartSimulationInput.pipelineId: The Pipeline.
StartSimulationInput.kind: Forecast or leads needed.
StartSimulationInput.horizonDays: Days ahead to simulate.
StartSimulationInput.confidence: For LEADS_NEEDED: chance of reaching the goal to aim for.
StartSimulationInput.trials: Monte Carlo trials.
StartSimulationInput.seed: Random seed.
Subscription: Live changes, over WebSocket (graphql-transport-ws).
Subscription.leadEvents(pipelineId): The Pipeline to follow.
Subscription.leadEvents(after): A position received with an event: continue after it.
Subscription.simulationProgress(jobId): The SimulationJob to follow.
UpdateLeadInput: Change a lead's fields; fields left out stay as they are.
UpdateLeadInput.leadId: The Lead to change.
UpdateLeadInput.expectedVersion: The lead's version you read: if it has changed since, CONFLICT.
UpdateLeadInput.title: A short name for the deal.
UpdateLeadInput.company: The prospect's company.
UpdateLeadInput.contactName: The contact's name.
UpdateLeadInput.contactEmail: The contact's email.
UpdateLeadInput.contactPhone: The contact's phone.
UpdateLeadInput.source: Where the lead came from.
UpdateLeadInput.value: Expected deal value.
UpdateLeadInput.budget: BANT: the prospect has budget.
UpdateLeadInput.authority: BANT: the contact can decide.
UpdateLeadInput.need: BANT: the prospect has the need.
UpdateLeadInput.timeline: BANT: the prospect has a timeline.
UpdatePipelineInput: Change a pipeline; fields left out stay as they are.
UpdatePipelineInput.pipelineId: The Pipeline to change.
UpdatePipelineInput.name: Its new name.
UpdatePipelineInput.currency: Its new currency (ISO 4217).
UpdatePipelineInput.description: Its new description.
UpdatePipelineInput.archived: Archive or restore it.
UpdateStageInput: Change a stage; fields left out stay as they are.
UpdateStageInput.stageId: The Stage to change.
UpdateStageInput.name: Its new name.
UpdateStageInput.exitCriteria: Its new exit criteria.
UpdateStageInput.isPostSale: Whether it comes after the sale.
UpdateUserInput: Change a user; fields left out stay as they are.
UpdateUserInput.userId: The User to change.
UpdateUserInput.name: The new name.
UpdateUserInput.email: The new email.
UpdateUserInput.role: The new role.
UpdateUserInput.capacity: The new capacity.
UpdateUserInput.active: False deactivates the user: their keys stop working.
User: A person (or service) requests act as, with a role.
User.name: The user's name.
User.email: The user's email.
User.role: What the user may do.
User.active: Deactivated users cannot authenticate.
UserPayload: The user as changed, or why not.
WhatIfInput: A change to compare with the pipeline as it is (paired trials).
WhatIfInput.pipelineId: The Pipeline.
WhatIfInput.changes: The changes making up the variant.
WhatIfInput.horizonDays: Days ahead to simulate.
WhatIfInput.goal: A revenue goal, for the chance of reaching it in each case.
WhatIfInput.seed: Random seed.
WhatIfResult: The pipeline as it is (base) beside the changed one (variant).
WhatIfResult.pipelineId: The Pipeline.
WhatIfResult.horizonDays: Days simulated.
WhatIfResult.trials: Monte Carlo trials run.
WhatIfResult.engine: The simulation engine that ran.
WhatIfResult.base: Revenue as things are.
WhatIfResult.variant: Revenue with the change.
WhatIfResult.winsDifference: Variant wins less base wins, trial by trial.
WhatIfResult.pVariantBetter: Share of trials where the variant wins more revenue.
WhatIfResult.goal: The goal asked about; null if none.
WhatIfResult.pGoalBase: Chance of reaching the goal as things are.
WhatIfResult.pGoalVariant: Chance of reaching it with the change.
WhatIfResult.pGoalDifference: Variant chance less base chance.
WhatIfResult.calibration: What the model learnt from history.
"""

_BY_FIELD_NAME = {
    "id": "Global ID, usable with node(id:).",
    "createdAt": "When it was created.",
    "updatedAt": "When it last changed.",
    "userErrors": "Why the change was refused; empty when it was made.",
}
_Described = GraphQLNamedType | GraphQLField | GraphQLInputField | GraphQLArgument | GraphQLEnumValue


def _entries() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in _TABLE.strip().splitlines():
        key, _, text = line.partition(": ")
        entries[key] = text
    return entries


def _targets(schema: GraphQLSchema) -> dict[str, _Described]:
    """Every describable element of the schema, by the table's key."""
    targets: dict[str, _Described] = {}
    for name, named in schema.type_map.items():
        if name.startswith("__"):
            continue
        targets[name] = named
        if isinstance(named, GraphQLEnumType):
            targets.update({f"{name}.{value}": v for value, v in named.values.items()})
        if isinstance(named, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for field_name, field in named.fields.items():
                targets[f"{name}.{field_name}"] = field
                for argument, arg in getattr(field, "args", {}).items():
                    targets[f"{name}.{field_name}({argument})"] = arg
    return targets


def _by_rule(key: str, target: _Described) -> str | None:
    owner, _, member = key.partition(".")
    field, _, argument = member.partition("(")
    if argument == "input)":
        return "What to change; see the input type."
    if argument:
        return None
    if field in _BY_FIELD_NAME:
        return _BY_FIELD_NAME[field]
    if owner.endswith("Payload") and isinstance(target, GraphQLField):
        return f"The {field} as changed; null when the change was refused."
    return None


def describe(schema: GraphQLSchema) -> None:
    """Give every element without a description its description from the table or a rule."""
    targets = _targets(schema)
    entries = _entries()
    unknown = sorted(set(entries) - set(targets))
    if unknown:
        raise ValueError(f"descriptions of nothing in the schema: {', '.join(unknown)}")
    for key, target in targets.items():
        if not target.description:
            target.description = entries.get(key) or _by_rule(key, target)


def undescribed(schema: GraphQLSchema) -> list[str]:
    """The elements still without a description (for the schema test)."""
    return sorted(key for key, target in _targets(schema).items() if not target.description)
