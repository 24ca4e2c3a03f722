-- route-liver.lua: Orthanc auto-routing of liver MR studies to liver-agent.
--
-- When a study becomes stable (no new instance for "StableAge" seconds), and it looks like a
-- liver MR exam, its MR image series are sent to the agent by C-STORE. The agent's results
-- (SEG, SR, Secondary Capture) come back into the same study; they make the study stable again,
-- and then nothing is sent: only MR series (Modality MR) that were not made by the agent
-- (Manufacturer "liver-agent") and were not sent before go out. A series that arrives late is sent on its own
-- (the agent then re-runs the study with it).
--
-- Orthanc configuration (see deploy/orthanc/orthanc.json):
--   "LuaScripts"       : [ "/etc/orthanc/route-liver.lua" ]
--   "StableAge"        : 60        seconds of quiet before a study counts as complete
--   "DicomModalities"  : { "liveragent" : [ "LIVERAI", "agent-host", 11112 ] }
--   "UserMetadata"     : { "LiverAgentSent" : 4301 }   remembers sent series across restarts
--                         (without it, the script remembers them until Orthanc restarts)
--
-- A send that fails (agent down) shows as a failed job in Orthanc Explorer ("Jobs"); resubmit
-- it there or with POST /jobs/{id}/resubmit.

AGENT_MODALITY = 'liveragent'
AGENT_MANUFACTURER = 'liver-agent'
SENT_METADATA = 'LiverAgentSent'

-- Lower-case fragments that mark a liver or upper-abdomen exam in descriptions, protocol
-- names and Body Part Examined (English, German, French, Italian, Spanish, Dutch).
LIVER_WORDS = {
  'liver', 'leber', 'foie', 'fegato', 'higado', 'hígado', 'lever', 'hepat',
  'abdom', 'oberbauch', 'upper abd', 'mrcp',
}

local sentInMemory = {}

local function Lower(value)
  if value == nil then
    return ''
  end
  return string.lower(tostring(value))
end

local function MentionsLiver(text)
  for _, word in ipairs(LIVER_WORDS) do
    if string.find(text, word, 1, true) then
      return true
    end
  end
  return false
end

-- An axial T2-weighted series by its description: HASTE / SSFSE / SSh TSE / T2, axial.
local function LooksAxialT2(tags)
  local text = Lower(tags['SeriesDescription']) .. ' ' .. Lower(tags['ProtocolName'])
  local t2 = string.find(text, 't2', 1, true) or string.find(text, 'haste', 1, true)
    or string.find(text, 'ssfse', 1, true) or string.find(text, 'ssh', 1, true)
  local axial = string.find(text, 'tra', 1, true) or string.find(text, 'ax', 1, true)
  return t2 ~= nil and axial ~= nil
end

-- An MR image series acquired by a scanner (not one of the agent's result series).
local function IsAcquiredMR(tags)
  if tags['Modality'] ~= 'MR' then
    return false
  end
  if tags['Manufacturer'] == AGENT_MANUFACTURER then
    return false
  end
  return not string.find(Lower(tags['SeriesDescription']), 'research use only', 1, true)
end

local function AlreadySent(seriesId)
  if sentInMemory[seriesId] then
    return true
  end
  local ok, names = pcall(function()
    return ParseJson(RestApiGet('/series/' .. seriesId .. '/metadata'))
  end)
  if ok and names ~= nil then
    for _, name in ipairs(names) do
      if name == SENT_METADATA then
        return true
      end
    end
  end
  return false
end

local function MarkSent(seriesId)
  sentInMemory[seriesId] = true
  -- fails quietly when "UserMetadata" does not declare LiverAgentSent
  pcall(function()
    RestApiPut('/series/' .. seriesId .. '/metadata/' .. SENT_METADATA, 'yes')
  end)
end

-- Liver words anywhere in the study; else, when no series names another body part, an axial
-- T2 series is enough (many scanners leave Body Part Examined empty).
local function IsLiverExam(studyTags, series)
  local studyText = Lower(studyTags['StudyDescription']) .. ' '
    .. Lower(studyTags['RequestedProcedureDescription'])
  if MentionsLiver(studyText) then
    return true
  end
  local otherBodyPart = false
  local axialT2 = false
  for _, s in ipairs(series) do
    local tags = s['MainDicomTags']
    if IsAcquiredMR(tags) then
      local text = Lower(tags['SeriesDescription']) .. ' ' .. Lower(tags['ProtocolName'])
        .. ' ' .. Lower(tags['BodyPartExamined'])
      if MentionsLiver(text) then
        return true
      end
      if Lower(tags['BodyPartExamined']) ~= '' then
        otherBodyPart = true
      end
      if LooksAxialT2(tags) then
        axialT2 = true
      end
    end
  end
  return axialT2 and not otherBodyPart
end

function OnStableStudy(studyId, tags, metadata)
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  local hasMR = false
  local toSend = {}
  for _, s in ipairs(series) do
    if IsAcquiredMR(s['MainDicomTags']) then
      hasMR = true
      if not AlreadySent(s['ID']) then
        table.insert(toSend, s['ID'])
      end
    end
  end
  if not hasMR then
    print('liver-agent routing: study ' .. studyId .. ': no MR image series, not sent')
    return
  end
  if not IsLiverExam(tags, series) then
    print('liver-agent routing: study ' .. studyId .. ': not a liver MR exam, not sent')
    return
  end
  if #toSend == 0 then
    print('liver-agent routing: study ' .. studyId .. ': nothing new to send')
    return
  end
  RestApiPost('/modalities/' .. AGENT_MODALITY .. '/store',
    DumpJson({ Resources = toSend, Asynchronous = true }, true))
  for _, seriesId in ipairs(toSend) do
    MarkSent(seriesId)
  end
  print('liver-agent routing: study ' .. studyId .. ': ' .. #toSend
    .. ' series sent to ' .. AGENT_MODALITY)
end
